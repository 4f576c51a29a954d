/*
 * Drive the lwc_runtime C API with bad calls; used by tests/test_deploy.py.
 *
 *   deploy_bad_calls GOOD.so MISSING.so NO_MANIFEST.so MALFORMED.so VERSION.so FORMAT.so
 *                    ARCH.so FEATURE.so NOT_ELF.so TRUNCATED.so SHAPE_OVERFLOW.so HUGE_SHAPE.so
 *
 * Prints one line per call, "<label> <status name> <message>", and exits 0 only if every
 * call returned the status expected for it (and nothing crashed).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lwc_runtime.h"

static int failures = 0;

static void expect(const char* label, lwc_status got, lwc_status want) {
  printf("%s %s %s\n", label, lwc_status_name(got), got == LWC_OK ? "" : lwc_last_error());
  if (got != want) {
    printf("FAIL %s: expected %s\n", label, lwc_status_name(want));
    ++failures;
  }
  if (got != LWC_OK && lwc_last_error()[0] == '\0') {
    printf("FAIL %s: empty error message\n", label);
    ++failures;
  }
}

static void expect_load(const char* label, const char* path, lwc_status want) {
  lwc_model* m = (lwc_model*)0x1;
  expect(label, lwc_model_load(path, &m), want);
  if (want != LWC_OK && m != NULL) {
    printf("FAIL %s: *out not reset to NULL\n", label);
    ++failures;
  }
  lwc_model_free(want == LWC_OK ? m : NULL);
}

int main(int argc, char** argv) {
  lwc_model* m = NULL;
  lwc_tensor_info info;
  int32_t n_in = 0, n_out = 0, idx = 0, i;
  int64_t bad_shape[8];
  const void* borrowed = NULL;
  void** buffers;
  char small[1];
  float* out;

  if (argc != 13) {
    fprintf(stderr, "usage: %s GOOD MISSING NO_MANIFEST MALFORMED VERSION FORMAT ARCH FEATURE NOT_ELF "
            "TRUNCATED SHAPE_OVERFLOW HUGE_SHAPE\n", argv[0]);
    return 2;
  }
  expect("load_null_path", lwc_model_load(NULL, &m), LWC_ERR_INVALID_ARGUMENT);
  expect("load_null_out", lwc_model_load(argv[1], NULL), LWC_ERR_INVALID_ARGUMENT);
  expect_load("load_missing", argv[2], LWC_ERR_FILE_NOT_FOUND);
  expect_load("load_no_manifest", argv[3], LWC_ERR_MANIFEST);
  expect_load("load_malformed_manifest", argv[4], LWC_ERR_MANIFEST);
  expect_load("load_version_mismatch", argv[5], LWC_ERR_VERSION_MISMATCH);
  expect_load("load_format_mismatch", argv[6], LWC_ERR_VERSION_MISMATCH);
  expect_load("load_wrong_arch", argv[7], LWC_ERR_UNSUPPORTED);
  expect_load("load_missing_feature", argv[8], LWC_ERR_UNSUPPORTED);
  expect_load("load_not_elf", argv[9], LWC_ERR_RUNTIME);
  /* found by tests/fuzz/capi_fuzz.c: a truncated .so died with SIGBUS inside dlopen; a
   * manifest shape whose byte size overflows size_t; a huge manifest shape allocated its
   * input buffer at load (now: at lwc_model_set_input, once the caller passes the bytes) */
  expect_load("load_truncated", argv[10], LWC_ERR_RUNTIME);
  expect_load("load_shape_overflow", argv[11], LWC_ERR_MANIFEST);
  expect_load("load_huge_shape", argv[12], LWC_OK);

  expect("load_good", lwc_model_load(argv[1], &m), LWC_OK);
  if (m == NULL) return 1;
  expect("num_inputs_null_model", lwc_model_num_inputs(NULL, &n_in), LWC_ERR_INVALID_ARGUMENT);
  expect("num_inputs_null_out", lwc_model_num_inputs(m, NULL), LWC_ERR_INVALID_ARGUMENT);
  expect("num_inputs", lwc_model_num_inputs(m, &n_in), LWC_OK);
  expect("num_outputs", lwc_model_num_outputs(m, &n_out), LWC_OK);
  expect("input_info_out_of_range", lwc_model_input_info(m, n_in, &info), LWC_ERR_INVALID_ARGUMENT);
  expect("input_info_negative", lwc_model_input_info(m, -1, &info), LWC_ERR_INVALID_ARGUMENT);
  expect("output_info_null_out", lwc_model_output_info(m, 0, NULL), LWC_ERR_INVALID_ARGUMENT);
  expect("input_index_unknown", lwc_model_input_index(m, "no_such_input", &idx), LWC_ERR_INVALID_ARGUMENT);
  expect("input_index_null_name", lwc_model_input_index(m, NULL, &idx), LWC_ERR_INVALID_ARGUMENT);
  expect("run_before_inputs", lwc_model_run(m), LWC_ERR_NOT_READY);
  expect("get_output_before_run", lwc_model_get_output(m, 0, small, sizeof(small)), LWC_ERR_NOT_READY);

  expect("input_info", lwc_model_input_info(m, 0, &info), LWC_OK);
  expect("input_index", lwc_model_input_index(m, info.name, &idx), LWC_OK);
  memcpy(bad_shape, info.shape, sizeof(int64_t) * (size_t)info.ndim);
  bad_shape[info.ndim - 1] += 1;
  buffers = (void**)calloc((size_t)n_in, sizeof(void*));
  for (i = 0; i < n_in; ++i) {
    lwc_tensor_info in;
    lwc_model_input_info(m, i, &in);
    buffers[i] = calloc(1, in.nbytes + 64);
  }
  expect("set_input_null_model", lwc_model_set_input(NULL, 0, info.dtype, info.ndim, info.shape, buffers[0], info.nbytes), LWC_ERR_INVALID_ARGUMENT);
  expect("set_input_bad_index", lwc_model_set_input(m, n_in, info.dtype, info.ndim, info.shape, buffers[0], info.nbytes), LWC_ERR_INVALID_ARGUMENT);
  expect("set_input_wrong_dtype", lwc_model_set_input(m, 0, LWC_INT32, info.ndim, info.shape, buffers[0], info.nbytes), LWC_ERR_DTYPE_MISMATCH);
  expect("set_input_bad_dtype_value", lwc_model_set_input(m, 0, (lwc_dtype)77, info.ndim, info.shape, buffers[0], info.nbytes), LWC_ERR_DTYPE_MISMATCH);
  expect("set_input_negative_dtype_value", lwc_model_set_input(m, 0, (lwc_dtype)-1, info.ndim, info.shape, buffers[0], info.nbytes), LWC_ERR_DTYPE_MISMATCH);
  expect("set_input_wrong_shape", lwc_model_set_input(m, 0, info.dtype, info.ndim, bad_shape, buffers[0], info.nbytes), LWC_ERR_SHAPE_MISMATCH);
  expect("set_input_wrong_ndim", lwc_model_set_input(m, 0, info.dtype, info.ndim - 1, info.shape, buffers[0], info.nbytes), LWC_ERR_SHAPE_MISMATCH);
  expect("set_input_negative_ndim", lwc_model_set_input(m, 0, info.dtype, -3, info.shape, buffers[0], info.nbytes), LWC_ERR_SHAPE_MISMATCH);
  expect("set_input_null_shape", lwc_model_set_input(m, 0, info.dtype, info.ndim, NULL, buffers[0], info.nbytes), LWC_ERR_INVALID_ARGUMENT);
  expect("set_input_wrong_nbytes", lwc_model_set_input(m, 0, info.dtype, info.ndim, info.shape, buffers[0], info.nbytes + 4), LWC_ERR_SIZE_MISMATCH);
  expect("set_input_null_data", lwc_model_set_input(m, 0, info.dtype, info.ndim, info.shape, NULL, info.nbytes), LWC_ERR_INVALID_ARGUMENT);
  for (i = 0; i < n_in; ++i) {
    lwc_tensor_info in;
    lwc_model_input_info(m, i, &in);
    expect("set_input", lwc_model_set_input(m, i, in.dtype, in.ndim, in.shape, buffers[i], in.nbytes), LWC_OK);
  }
  expect("run", lwc_model_run(m), LWC_OK);
  expect("run_again", lwc_model_run(m), LWC_OK);
  expect("output_info_out_of_range", lwc_model_output_info(m, n_out, &info), LWC_ERR_INVALID_ARGUMENT);
  expect("output_info", lwc_model_output_info(m, 0, &info), LWC_OK);
  expect("get_output_small_buffer", lwc_model_get_output(m, 0, small, sizeof(small)), LWC_ERR_SIZE_MISMATCH);
  expect("get_output_null_dst", lwc_model_get_output(m, 0, NULL, info.nbytes), LWC_ERR_INVALID_ARGUMENT);
  expect("get_output_bad_index", lwc_model_get_output(m, -1, small, sizeof(small)), LWC_ERR_INVALID_ARGUMENT);
  expect("borrow_output_null_data", lwc_model_borrow_output(m, 0, NULL, &info), LWC_ERR_INVALID_ARGUMENT);
  expect("borrow_output", lwc_model_borrow_output(m, 0, &borrowed, NULL), LWC_OK);
  out = (float*)malloc(info.nbytes);
  expect("get_output", lwc_model_get_output(m, 0, out, info.nbytes), LWC_OK);
  if (borrowed == NULL || memcmp(out, borrowed, info.nbytes) != 0) {
    printf("FAIL borrowed output differs from the copy\n");
    ++failures;
  }
  free(out);
  for (i = 0; i < n_in; ++i) free(buffers[i]);
  free(buffers);
  expect("free", lwc_model_free(m), LWC_OK);
  expect("free_null", lwc_model_free(NULL), LWC_OK);
  /* found by tests/fuzz/capi_fuzz.c: a freed or foreign handle is refused, not used */
  expect("free_twice", lwc_model_free(m), LWC_ERR_INVALID_ARGUMENT);
  expect("run_after_free", lwc_model_run(m), LWC_ERR_INVALID_ARGUMENT);
  expect("num_inputs_after_free", lwc_model_num_inputs(m, &n_in), LWC_ERR_INVALID_ARGUMENT);
  expect("run_not_a_model", lwc_model_run((lwc_model*)&info), LWC_ERR_INVALID_ARGUMENT);
  expect("free_not_a_model", lwc_model_free((lwc_model*)&info), LWC_ERR_INVALID_ARGUMENT);
  if (strcmp(lwc_dtype_name((lwc_dtype)99), "unknown") != 0 || lwc_dtype_size((lwc_dtype)99) != 0 ||
      strcmp(lwc_dtype_name((lwc_dtype)-1), "unknown") != 0 ||
      strcmp(lwc_status_name((lwc_status)-1), "LWC_ERR_UNKNOWN_STATUS") != 0 ||
      lwc_status_name((lwc_status)999) == NULL || lwc_runtime_version() == NULL) {
    printf("FAIL string getters\n");
    ++failures;
  }
  printf("failures %d\n", failures);
  return failures == 0 ? 0 : 1;
}
