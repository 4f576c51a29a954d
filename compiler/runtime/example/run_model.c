/*
 * run_model: run an lwc model on raw input files and write raw output files.
 *
 *   ./run_model MODEL.so INPUT.bin... OUTPUT.bin...
 *
 * One INPUT file per model input, in the model's order: C-order (row-major), native
 * endian bytes of exactly the compiled shape and dtype (numpy: x.astype(np.float32)
 * .tofile("input.bin")). Then one OUTPUT path per model output; if only one is given for
 * a model with several outputs, output i > 0 goes to OUTPUT.bin.<i>. Read an output back
 * with np.fromfile("output.bin", np.float32).reshape(shape printed below).
 * A model compiled with a range for one dim (--input-shape x:1,3,48,96..1280: the dim is
 * -1 in the input info) takes that dim from the input file's size.
 *
 * Exit status: 0 on success, 1 with one line "run_model: <message>" on stderr otherwise.
 */
#define _POSIX_C_SOURCE 199309L /* clock_gettime */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lwc_runtime.h"

static int fail(const char* what, lwc_status status) {
  fprintf(stderr, "run_model: %s: %s: %s\n", what, lwc_status_name(status), lwc_last_error());
  return 1;
}

static void print_info(const char* kind, int32_t i, const lwc_tensor_info* info) {
  int32_t d;
  printf("%s %d %s %s [", kind, (int)i, info->name, lwc_dtype_name(info->dtype));
  for (d = 0; d < info->ndim; ++d) printf("%s%lld", d ? ", " : "", (long long)info->shape[d]);
  printf("] %zu bytes\n", info->nbytes);
}

/* The input's shape with its one dynamic dim (-1) taken from the size of `path`, into
 * shape[] (at most 64 dims); 0 with a message when it cannot be. */
static int shape_from_file(const char* path, const lwc_tensor_info* info, int64_t* shape,
                           size_t* nbytes) {
  FILE* f = fopen(path, "rb");
  long size = -1;
  size_t rest = lwc_dtype_size(info->dtype);
  int32_t d, dynamic = -1;
  if (f != NULL) {
    fseek(f, 0, SEEK_END);
    size = ftell(f);
    fclose(f);
  }
  for (d = 0; d < info->ndim && d < 64; ++d) {
    shape[d] = info->shape[d];
    if (shape[d] < 0 && dynamic >= 0) {
      fprintf(stderr, "run_model: input %s has several dynamic dims; set its shape with "
              "lwc_model_set_input\n", info->name);
      return 0;
    }
    if (shape[d] < 0) dynamic = d;
    else rest *= (size_t)shape[d];
  }
  if (dynamic >= 0) {
    if (size < 0 || rest == 0 || (size_t)size % rest != 0) {
      fprintf(stderr, "run_model: %s (%ld bytes) is not a whole number of %s rows\n", path,
              size, info->name);
      return 0;
    }
    shape[dynamic] = (int64_t)((size_t)size / rest);
  }
  *nbytes = dynamic >= 0 ? (size_t)size : info->nbytes;
  return 1;
}

/* Read exactly `nbytes` from `path` into a new buffer (NULL with a message on error). */
static void* read_file(const char* path, size_t nbytes) {
  FILE* f = fopen(path, "rb");
  void* buf;
  long size;
  if (f == NULL) {
    fprintf(stderr, "run_model: cannot open %s\n", path);
    return NULL;
  }
  fseek(f, 0, SEEK_END);
  size = ftell(f);
  fseek(f, 0, SEEK_SET);
  if (size < 0 || (size_t)size != nbytes) {
    fprintf(stderr, "run_model: %s has %ld bytes, the input needs %zu\n", path, size, nbytes);
    fclose(f);
    return NULL;
  }
  buf = malloc(nbytes ? nbytes : 1);
  if (buf == NULL || fread(buf, 1, nbytes, f) != nbytes) {
    fprintf(stderr, "run_model: cannot read %s\n", path);
    free(buf);
    buf = NULL;
  }
  fclose(f);
  return buf;
}

static int write_file(const char* path, const void* data, size_t nbytes) {
  FILE* f = fopen(path, "wb");
  int ok = f != NULL && fwrite(data, 1, nbytes, f) == nbytes;
  if (f != NULL && fclose(f) != 0) ok = 0;
  if (!ok) fprintf(stderr, "run_model: cannot write %s\n", path);
  return ok;
}

int main(int argc, char** argv) {
  lwc_model* model = NULL;
  lwc_status st;
  int32_t n_in = 0, n_out = 0, i;
  int rc = 1, n_out_paths;
  struct timespec t0, t1;

  if (argc < 4) {
    fprintf(stderr, "usage: %s MODEL.so INPUT.bin... OUTPUT.bin...\n", argv[0]);
    return 2;
  }
  printf("%s\n", lwc_runtime_version());
  st = lwc_model_load(argv[1], &model);
  if (st != LWC_OK) return fail("load", st);
  lwc_model_num_inputs(model, &n_in);
  lwc_model_num_outputs(model, &n_out);
  n_out_paths = argc - 2 - n_in;
  if (n_out_paths != 1 && n_out_paths != n_out) {
    fprintf(stderr, "run_model: the model has %d input(s) and %d output(s); give %d input "
            "file(s) then 1 or %d output path(s)\n", (int)n_in, (int)n_out, (int)n_in, (int)n_out);
    goto done;
  }

  for (i = 0; i < n_in; ++i) {
    lwc_tensor_info info;
    int64_t shape[64];
    size_t nbytes;
    void* data;
    lwc_model_input_info(model, i, &info);
    print_info("input", i, &info);
    if (!shape_from_file(argv[2 + i], &info, shape, &nbytes)) goto done;
    data = read_file(argv[2 + i], nbytes);
    if (data == NULL) goto done;
    st = lwc_model_set_input(model, i, info.dtype, info.ndim, shape, data, nbytes);
    free(data);
    if (st != LWC_OK) {
      rc = fail("set_input", st);
      goto done;
    }
  }

  clock_gettime(CLOCK_MONOTONIC, &t0);
  st = lwc_model_run(model);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  if (st != LWC_OK) {
    rc = fail("run", st);
    goto done;
  }
  printf("time_ms %.3f\n", (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6);

  for (i = 0; i < n_out; ++i) {
    lwc_tensor_info info;
    const void* data = NULL;
    char path[4096];
    st = lwc_model_borrow_output(model, i, &data, &info);
    if (st != LWC_OK) {
      rc = fail("output", st);
      goto done;
    }
    print_info("output", i, &info);
    if (n_out_paths == n_out || i == 0) {
      snprintf(path, sizeof(path), "%s", argv[2 + n_in + (n_out_paths == n_out ? i : 0)]);
    } else {
      snprintf(path, sizeof(path), "%s.%d", argv[2 + n_in], (int)i);
    }
    if (!write_file(path, data, info.nbytes)) goto done;
  }
  rc = 0;

done:
  lwc_model_free(model);
  return rc;
}
