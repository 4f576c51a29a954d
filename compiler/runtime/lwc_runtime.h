/*
 * lwc_runtime.h: load and run a model compiled by lwc (NAME.so + NAME.json) from C.
 *
 * Plain C99; no C++ types. Link with -llwc_runtime (which pulls in libtvm_runtime.so and
 * libtvm_ffi.so of the exact versions the model was built with; an lwc bundle ships all
 * three in lib/).
 *
 *   lwc_model* m = NULL;
 *   if (lwc_model_load("det.so", &m) != LWC_OK) {
 *     fprintf(stderr, "%s\n", lwc_last_error());
 *     return 1;
 *   }
 *   lwc_tensor_info in;
 *   lwc_model_input_info(m, 0, &in);             // name, dtype, shape, nbytes
 *   lwc_model_set_input(m, 0, LWC_FLOAT32, in.ndim, in.shape, pixels, in.nbytes);
 *   lwc_model_run(m);
 *   lwc_model_get_output(m, 0, out_buffer, out_nbytes);   // copy, or:
 *   lwc_model_borrow_output(m, 0, &ptr, &info);            // valid until the next run/free
 *   lwc_model_free(m);
 *
 * Rules:
 * - Every function (except the three string getters) returns an lwc_status; LWC_OK is 0.
 *   On failure, lwc_last_error() gives a one-line message for the calling thread.
 * - Nothing aborts the process on bad input: NULL pointers, out-of-range indices, wrong
 *   shape, dtype or byte count, a missing or foreign file, a manifest from another
 *   apache-tvm / apache-tvm-ffi version, or a CPU that lacks an ISA feature the model
 *   was compiled for (e.g. dotprod) all return an error code with a message.
 * - lwc_model_load reads the manifest NAME.json beside NAME.so and checks, before the
 *   library is opened: the manifest format, the apache-tvm and apache-tvm-ffi versions
 *   (against the versions this library was built for and the loaded libtvm_ffi), the
 *   target architecture and the CPU features (Linux: getauxval hwcaps on AArch64,
 *   /proc/cpuinfo flags on x86-64). LWC_CPU_FEATURES="neon,dotprod" overrides detection.
 * - A handle that lwc_model_free released (or any pointer lwc_model_load did not return)
 *   is refused with LWC_ERR_INVALID_ARGUMENT, a second lwc_model_free included; the
 *   library never dereferences it. (A later load may reuse the address.)
 * - A model handle is not thread-safe; use one handle per thread (loading the same file
 *   twice is fine). The TVM thread pool size follows TVM_NUM_THREADS.
 */
#ifndef LWC_RUNTIME_H_
#define LWC_RUNTIME_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define LWC_API __declspec(dllexport)
#else
#define LWC_API __attribute__((visibility("default")))
#endif

/* In C++ the enums get int as their fixed underlying type (the size C gives them): then
 * any int a C caller passes, (lwc_dtype)77 or (lwc_status)-1, is a valid value that the
 * library answers ("unknown", an error status), not undefined behaviour in C++. */
#ifdef __cplusplus
#define LWC_ENUM_BASE : int
#else
#define LWC_ENUM_BASE
#endif

/* Version of this C API. Bumped when a function's signature or meaning changes. */
#define LWC_RUNTIME_API_VERSION 1

typedef enum LWC_ENUM_BASE {
  LWC_OK = 0,
  LWC_ERR_INVALID_ARGUMENT = 1, /* NULL pointer, index out of range, bad name */
  LWC_ERR_FILE_NOT_FOUND = 2,   /* model .so missing or unreadable */
  LWC_ERR_MANIFEST = 3,         /* NAME.json missing, unreadable or malformed */
  LWC_ERR_VERSION_MISMATCH = 4, /* built with another apache-tvm / apache-tvm-ffi / format */
  LWC_ERR_UNSUPPORTED = 5,      /* other CPU architecture, missing ISA feature, GPU model */
  LWC_ERR_SHAPE_MISMATCH = 6,   /* input shape differs from the compiled shape */
  LWC_ERR_DTYPE_MISMATCH = 7,   /* input dtype differs from the compiled dtype */
  LWC_ERR_SIZE_MISMATCH = 8,    /* byte count does not match the tensor */
  LWC_ERR_NOT_READY = 9,        /* input not set before run, output read before run */
  LWC_ERR_RUNTIME = 10,         /* TVM failed to load or run the model */
  LWC_ERR_OUT_OF_MEMORY = 11
} lwc_status;

typedef enum LWC_ENUM_BASE {
  LWC_DTYPE_UNKNOWN = 0,
  LWC_FLOAT16 = 1,
  LWC_FLOAT32 = 2,
  LWC_FLOAT64 = 3,
  LWC_INT8 = 4,
  LWC_INT16 = 5,
  LWC_INT32 = 6,
  LWC_INT64 = 7,
  LWC_UINT8 = 8,
  LWC_UINT16 = 9,
  LWC_UINT32 = 10,
  LWC_UINT64 = 11,
  LWC_BOOL = 12 /* one byte per element */
} lwc_dtype;

/* Description of one input or output. Pointers are owned by the model and stay valid
 * until lwc_model_free (output shapes: until the next lwc_model_run).
 * Dynamic dims (a model compiled with --input-shape x:1,3,48,96..1280): such a dim is -1
 * in an input's shape (lwc_model_input_dim_range gives its accepted range) and in an
 * output's shape until a run gives the actual one; nbytes is then 0. */
typedef struct {
  const char* name;
  lwc_dtype dtype;
  int32_t ndim;
  const int64_t* shape; /* ndim entries; -1 for a dynamic dim */
  size_t nbytes;        /* product(shape) * lwc_dtype_size(dtype); 0 while a dim is -1 */
} lwc_tensor_info;

typedef struct lwc_model lwc_model;

/* "lwc_runtime <lwc version> (apache-tvm X, apache-tvm-ffi Y, <arch>)". Never NULL. */
LWC_API const char* lwc_runtime_version(void);
/* Message of the last failed call on this thread ("" if none). Never NULL. */
LWC_API const char* lwc_last_error(void);
/* Short name of a status code ("LWC_ERR_SHAPE_MISMATCH"). Never NULL. */
LWC_API const char* lwc_status_name(lwc_status status);
/* "float32" etc.; "unknown" for LWC_DTYPE_UNKNOWN or a bad value. Never NULL. */
LWC_API const char* lwc_dtype_name(lwc_dtype dtype);
/* Bytes per element (0 for an unknown dtype). */
LWC_API size_t lwc_dtype_size(lwc_dtype dtype);

/* Load NAME.so (its manifest NAME.json must lie beside it) and initialise the VM on the
 * CPU. On success *out is a new handle; on failure *out is set to NULL. */
LWC_API lwc_status lwc_model_load(const char* path, lwc_model** out);
/* Release a model. NULL is accepted (no-op). */
LWC_API lwc_status lwc_model_free(lwc_model* model);

LWC_API lwc_status lwc_model_num_inputs(const lwc_model* model, int32_t* out);
LWC_API lwc_status lwc_model_num_outputs(const lwc_model* model, int32_t* out);
LWC_API lwc_status lwc_model_input_info(const lwc_model* model, int32_t index,
                                        lwc_tensor_info* out);
/* Before the first run: the shapes from the manifest; after a run: the actual ones. */
LWC_API lwc_status lwc_model_output_info(const lwc_model* model, int32_t index,
                                         lwc_tensor_info* out);
/* The values input `index` accepts in dim `axis`, both inclusive: [96, 1280] for a dynamic
 * dim (--input-shape x:1,3,48,96..1280), lo == hi == the dim for a fixed one. */
LWC_API lwc_status lwc_model_input_dim_range(const lwc_model* model, int32_t index, int32_t axis,
                                             int64_t* lo, int64_t* hi);
/* Index of the input called name (LWC_ERR_INVALID_ARGUMENT if there is none). */
LWC_API lwc_status lwc_model_input_index(const lwc_model* model, const char* name,
                                         int32_t* out);

/* Copy nbytes of C-order (row-major), native-endian data into input `index`. dtype, ndim
 * and shape must equal the compiled ones (a dynamic dim: any value in its range, the same
 * for every input that shares its symbol; else LWC_ERR_SHAPE_MISMATCH naming the input,
 * the dim and the accepted range); nbytes must equal the tensor size. */
LWC_API lwc_status lwc_model_set_input(lwc_model* model, int32_t index, lwc_dtype dtype,
                                       int32_t ndim, const int64_t* shape, const void* data,
                                       size_t nbytes);
/* Run the model once on the inputs set so far (all inputs must have been set). */
LWC_API lwc_status lwc_model_run(lwc_model* model);
/* Copy output `index` of the last run into dst (dst_nbytes must be >= its size). */
LWC_API lwc_status lwc_model_get_output(const lwc_model* model, int32_t index, void* dst,
                                        size_t dst_nbytes);
/* Borrow output `index` of the last run: *data stays valid until the next lwc_model_run
 * or lwc_model_free. info may be NULL. */
LWC_API lwc_status lwc_model_borrow_output(const lwc_model* model, int32_t index,
                                           const void** data, lwc_tensor_info* info);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* LWC_RUNTIME_H_ */
