/*
 * capi_fuzz.c: fuzz the lwc_runtime C API (lwc_runtime.h) with random call sequences.
 *
 * Each input is a program: its bytes are read as calls on four handle slots. Handles may
 * be NULL, freed (then used again and freed twice) or garbage; inputs get random dtypes,
 * ndims, shapes and byte counts, outputs random buffer sizes; loads read the good model
 * or a copy whose .so is truncated or a foreign file, or whose manifest has bytes
 * flipped, cut or inserted. The runtime must answer every call with a status and a
 * one-line message on failure: no crash, no sanitizer report. The harness only ever
 * passes buffers as large as it says they are (the API's contract).
 *
 * Three drivers over one program interpreter (benchmarks/fuzz_capi.sh builds them):
 *   default              libFuzzer: clang -fsanitize=fuzzer,address,undefined
 *   -DLWC_FUZZ_STANDALONE  main(): seeded random programs for N seconds (gcc or clang
 *                        without libFuzzer: -fsanitize=address,undefined)
 *   -DLWC_FUZZ_THREADS   main(): T threads at once, each its own handles, running random
 *                        programs and checking the good model's outputs against a
 *                        single-threaded reference (-fsanitize=thread)
 *
 * Environment: LWC_FUZZ_MODEL=/path/model.so (model.json beside it).
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "lwc_runtime.h"

#define SLOTS 4
#define MAX_OPS 48
#define MAX_BUFFER (1u << 22)

static const char* g_model;
static unsigned char* g_so;
static size_t g_so_size;
static unsigned char* g_json;
static size_t g_json_size;

static const char* const kForeign[] = {
    "/bin/true", "/lib/x86_64-linux-gnu/libm.so.6", "/usr/aarch64-linux-gnu/lib/libm.so.6",
    "/etc/hostname", "/dev/null", "/proc/self/maps", "/tmp",
};
static const char* const kAnchors[] = {"\"inputs\"", "\"outputs\"", "\"shape\"", "\"dtype\"",
                                       "\"versions\"", "\"target\"", "\"format\"", "\"arch\""};

typedef struct {
  const uint8_t* p;
  size_t n;
} Reader;

static unsigned byte(Reader* r) {
  if (r->n == 0) return 0;
  --r->n;
  return *r->p++;
}

/* mostly small values, sometimes extremes */
static int64_t number(Reader* r) {
  unsigned k = byte(r);
  unsigned shift;
  switch (k % 8) {
    case 0: return -1;
    case 1: return INT64_MAX;
    case 2: return INT64_MIN;
    case 3:
      shift = byte(r) % 48;
      return (int64_t)byte(r) << shift;
    default: return (int64_t)(k % 40) - 4;
  }
}

static unsigned char* read_file(const char* path, size_t* size) {
  FILE* f = fopen(path, "rb");
  unsigned char* buf;
  long n;
  if (f == NULL) return NULL;
  fseek(f, 0, SEEK_END);
  n = ftell(f);
  fseek(f, 0, SEEK_SET);
  if (n < 0 || n > (1L << 26)) { /* a folder, a /proc file */
    fclose(f);
    return NULL;
  }
  buf = (unsigned char*)malloc((size_t)n + 1);
  if (buf == NULL || fread(buf, 1, (size_t)n, f) != (size_t)n) {
    fclose(f);
    free(buf);
    return NULL;
  }
  buf[n] = 0;
  fclose(f);
  *size = (size_t)n;
  return buf;
}

/* A new file (new inode) each time: a library still loaded from the old one keeps it. */
static void write_file(const char* path, const void* data, size_t n) {
  FILE* f;
  unlink(path);
  f = fopen(path, "wb");
  if (f == NULL) abort();
  if (n > 0 && fwrite(data, 1, n, f) != n) abort();
  fclose(f);
}

static void setup(void) {
  char path[1024];
  g_model = getenv("LWC_FUZZ_MODEL");
  if (g_model == NULL || strlen(g_model) < 4 || strlen(g_model) > 900) {
    fprintf(stderr, "set LWC_FUZZ_MODEL=/path/model.so (model.json beside it)\n");
    exit(2);
  }
  g_so = read_file(g_model, &g_so_size);
  snprintf(path, sizeof(path), "%.*s.json", (int)(strlen(g_model) - 3), g_model);
  g_json = read_file(path, &g_json_size);
  if (g_so == NULL || g_json == NULL) {
    fprintf(stderr, "cannot read %s or its manifest\n", g_model);
    exit(2);
  }
}

/* ------------------------------------------------------------------ one program */

typedef struct {
  lwc_model* slot[SLOTS];
  char dir[128];
  int variant;
} Program;

/* the programs' folders of variant files, removed at exit */
static char g_dirs[17][128];
static int g_ndirs;

static void remove_dirs(void) {
  int i, k;
  char path[160];
  for (i = 0; i < g_ndirs; ++i) {
    for (k = 0; k < 16; ++k) {
      snprintf(path, sizeof(path), "%s/v%d.%s", g_dirs[i], k / 2, k % 2 ? "json" : "so");
      unlink(path);
    }
    rmdir(g_dirs[i]);
  }
}

static void program_init(Program* pr, int tag) {
  memset(pr, 0, sizeof(*pr));
  snprintf(pr->dir, sizeof(pr->dir), "/tmp/lwc_capi_fuzz_%d_%d", (int)getpid(), tag);
  mkdir(pr->dir, 0700);
  if (g_ndirs < 17) {
    memcpy(g_dirs[g_ndirs++], pr->dir, sizeof(pr->dir));
    if (g_ndirs == 1) atexit(remove_dirs);
  }
}

static void check_message(lwc_status st) {
  const char* msg = lwc_last_error();
  if (st != LWC_OK && (msg == NULL || msg[0] == '\0' || strchr(msg, '\n') != NULL)) {
    fprintf(stderr, "status %s with a bad message: '%s'\n", lwc_status_name(st), msg ? msg : "(null)");
    abort();
  }
}

static lwc_status load_into(Program* pr, unsigned s, const char* path) {
  lwc_model* m = (lwc_model*)0x1;
  lwc_status st = lwc_model_load(path, &m);
  check_message(st);
  if ((st == LWC_OK) != (m != NULL)) {
    fprintf(stderr, "load %s: status %s but handle %p\n", path, lwc_status_name(st), (void*)m);
    abort();
  }
  if (st == LWC_OK) {
    lwc_model_free(pr->slot[s]); /* may be dangling: the registry refuses it */
    pr->slot[s] = m;
  }
  return st;
}

/* path of a fresh variant file; ext ".so" or ".json" */
static void variant_paths(Program* pr, char* so, char* json, size_t n) {
  ++pr->variant;
  snprintf(so, n, "%s/v%d.so", pr->dir, pr->variant % 8);
  snprintf(json, n, "%s/v%d.json", pr->dir, pr->variant % 8);
}

static void load_mutated_manifest(Program* pr, unsigned s, Reader* r) {
  char so[256], json[256];
  unsigned char* text = (unsigned char*)malloc(g_json_size + 64);
  size_t n = g_json_size, i, edits = 1 + byte(r) % 4;
  memcpy(text, g_json, n);
  for (i = 0; i < edits && n > 0; ++i) {
    const char* anchor = strstr((const char*)g_json, kAnchors[byte(r) % 8]);
    size_t at = anchor ? (size_t)(anchor - (const char*)g_json) + byte(r) % 96 : byte(r) * 97u;
    unsigned kind = byte(r) % 4;
    at %= n;
    if (kind == 0) {
      text[at] ^= (unsigned char)(1u << (byte(r) % 8));
    } else if (kind == 1) {
      text[at] = (unsigned char)"0123456789-.e\"[]{},:9"[byte(r) % 21];
    } else if (kind == 2) {
      n = at; /* cut */
    } else if (n + 8 < g_json_size + 64) {
      memmove(text + at + 8, text + at, n - at); /* insert 8 bytes */
      memcpy(text + at, "99999999", 8);
      n += 8;
    }
  }
  variant_paths(pr, so, json, sizeof(so));
  unlink(so);
  if (symlink(g_model, so) != 0) abort();
  write_file(json, text, n);
  free(text);
  load_into(pr, s, so);
}

static void load_truncated(Program* pr, unsigned s, Reader* r) {
  char so[256], json[256];
  size_t cut = ((size_t)byte(r) << 16 | (size_t)byte(r) << 8 | byte(r)) % (g_so_size + 1);
  if (byte(r) % 2) cut = g_so_size - cut % 4096; /* a tail cut: headers intact */
  variant_paths(pr, so, json, sizeof(so));
  write_file(so, g_so, cut);
  write_file(json, g_json, g_json_size);
  load_into(pr, s, so);
}

static void load_foreign(Program* pr, unsigned s, Reader* r) {
  char so[256], json[256];
  size_t n = 0;
  const char* src = kForeign[byte(r) % (sizeof(kForeign) / sizeof(kForeign[0]))];
  unsigned char* data = read_file(src, &n);
  variant_paths(pr, so, json, sizeof(so));
  write_file(so, data ? data : (const unsigned char*)"", data ? n : 0);
  free(data);
  write_file(json, g_json, g_json_size);
  load_into(pr, s, byte(r) % 4 ? so : src);
}

static lwc_model* handle(Program* pr, Reader* r) {
  static int not_a_model;
  unsigned k = byte(r);
  if (k % 16 == 0) return NULL;
  if (k % 16 == 1) return (lwc_model*)&not_a_model;
  if (k % 16 == 2) return (lwc_model*)(uintptr_t)0x10;
  return pr->slot[k % SLOTS];
}

static void touch_info(const lwc_tensor_info* info) {
  volatile size_t sum = strlen(info->name);
  int32_t i;
  for (i = 0; i < info->ndim; ++i) sum += (size_t)info->shape[i];
  (void)sum;
}

static void set_random_input(Program* pr, Reader* r) {
  lwc_model* m = handle(pr, r);
  int32_t index = (int32_t)number(r);
  lwc_tensor_info real;
  int64_t shape[16];
  int32_t ndim, i;
  lwc_dtype dtype;
  size_t nbytes;
  void* data;
  int have = lwc_model_input_info(m, index < 0 ? 0 : index % 4, &real) == LWC_OK;
  ndim = have && byte(r) % 2 ? real.ndim : (int32_t)(byte(r) % 12) - 2;
  for (i = 0; i < ndim && i < 16; ++i) {
    shape[i] = have && i < real.ndim && byte(r) % 4 ? real.shape[i] : number(r);
  }
  if (ndim > 16) ndim = 16;
  dtype = have && byte(r) % 2 ? real.dtype : (lwc_dtype)(byte(r) % 16);
  nbytes = have && byte(r) % 2 ? real.nbytes : (size_t)number(r);
  data = nbytes <= MAX_BUFFER ? calloc(1, nbytes ? nbytes : 1) : NULL; /* NULL: never read */
  check_message(lwc_model_set_input(m, index, dtype, ndim, byte(r) % 8 ? shape : NULL,
                                    byte(r) % 16 ? data : NULL, nbytes));
  free(data);
}

static void set_all_inputs(lwc_model* m) {
  int32_t n = 0, i;
  if (lwc_model_num_inputs(m, &n) != LWC_OK) return;
  for (i = 0; i < n; ++i) {
    lwc_tensor_info in;
    float* data;
    size_t k;
    if (lwc_model_input_info(m, i, &in) != LWC_OK) return;
    /* a mutated manifest may declare a huge input (4 x 99999999 floats): the harness must
     * not allocate and fill it (it did, and the OOM killer ended the run) */
    if (in.nbytes > MAX_BUFFER) continue;
    data = (float*)malloc(in.nbytes ? in.nbytes : 1);
    for (k = 0; k < in.nbytes; ++k) ((unsigned char*)data)[k] = (unsigned char)(k * 7 % 61);
    check_message(lwc_model_set_input(m, i, in.dtype, in.ndim, in.shape, data, in.nbytes));
    free(data);
  }
}

static void get_output(Program* pr, Reader* r) {
  lwc_model* m = handle(pr, r);
  int32_t index = (int32_t)number(r);
  lwc_tensor_info info;
  size_t n;
  void* dst;
  if (byte(r) % 2 && lwc_model_output_info(m, index, &info) == LWC_OK) {
    n = info.nbytes + (size_t)(byte(r) % 3) - 1;
  } else {
    n = (size_t)number(r);
  }
  if (n > MAX_BUFFER) n = byte(r);
  dst = malloc(n ? n : 1);
  check_message(lwc_model_get_output(m, index, byte(r) % 16 ? dst : NULL, n));
  free(dst);
}

static void borrow_output(Program* pr, Reader* r) {
  lwc_model* m = handle(pr, r);
  const void* data = NULL;
  lwc_tensor_info info;
  lwc_status st = lwc_model_borrow_output(m, (int32_t)number(r), byte(r) % 16 ? &data : NULL,
                                          byte(r) % 2 ? &info : NULL);
  check_message(st);
  if (st == LWC_OK && data != NULL) {
    lwc_tensor_info full;
    int32_t i;
    volatile unsigned char sum = 0;
    if (lwc_model_borrow_output(m, 0, &data, &full) == LWC_OK) {
      touch_info(&full);
      for (i = 0; (size_t)i < full.nbytes; ++i) sum += ((const unsigned char*)data)[i];
      (void)sum;
    }
  }
}

static void run_program(Program* pr, const uint8_t* bytes, size_t size) {
  Reader rd = {bytes, size};
  Reader* r = &rd;
  int ops = 0;
  while (rd.n > 0 && ops++ < MAX_OPS) {
    unsigned op = byte(r) % 16, s = byte(r) % SLOTS;
    lwc_tensor_info info;
    int32_t count;
    char name[32];
    switch (op) {
      case 0: load_into(pr, s, g_model); break;
      case 1: load_mutated_manifest(pr, s, r); break;
      case 2: load_truncated(pr, s, r); break;
      case 3: load_foreign(pr, s, r); break;
      case 4: check_message(lwc_model_free(pr->slot[s])); break; /* the slot keeps it: dangling */
      case 5:
        check_message(lwc_model_free(pr->slot[s]));
        pr->slot[s] = NULL;
        break;
      case 6:
        check_message(lwc_model_num_inputs(handle(pr, r), byte(r) % 8 ? &count : NULL));
        check_message(lwc_model_num_outputs(handle(pr, r), byte(r) % 8 ? &count : NULL));
        break;
      case 7: {
        lwc_model* m = handle(pr, r);
        int32_t index = (int32_t)number(r);
        lwc_status st = byte(r) % 2 ? lwc_model_input_info(m, index, byte(r) % 8 ? &info : NULL)
                                    : lwc_model_output_info(m, index, byte(r) % 8 ? &info : NULL);
        check_message(st);
        if (st == LWC_OK) touch_info(&info);
        break;
      }
      case 8: {
        unsigned i, len = byte(r) % sizeof(name);
        for (i = 0; i < len; ++i) name[i] = (char)byte(r);
        name[len] = '\0';
        if (byte(r) % 2 && lwc_model_input_info(pr->slot[s], 0, &info) == LWC_OK) {
          snprintf(name, sizeof(name), "%s", info.name);
        }
        check_message(lwc_model_input_index(handle(pr, r), byte(r) % 8 ? name : NULL,
                                            byte(r) % 8 ? &count : NULL));
        break;
      }
      case 9: set_random_input(pr, r); break;
      case 10: set_all_inputs(pr->slot[s]); break;
      case 11: check_message(lwc_model_run(handle(pr, r))); break;
      case 12: get_output(pr, r); break;
      case 13: borrow_output(pr, r); break;
      case 14: {
        volatile size_t sum = strlen(lwc_status_name((lwc_status)(int)number(r)));
        sum += strlen(lwc_dtype_name((lwc_dtype)(int)number(r))) + lwc_dtype_size((lwc_dtype)(int)number(r));
        sum += strlen(lwc_last_error()) + strlen(lwc_runtime_version());
        (void)sum;
        break;
      }
      default: check_message(lwc_model_load(byte(r) % 2 ? NULL : g_model, NULL)); break;
    }
  }
  for (ops = 0; ops < SLOTS; ++ops) {
    lwc_model_free(pr->slot[ops]); /* dangling ones are refused */
    pr->slot[ops] = NULL;
  }
}

/* ------------------------------------------------------------------ drivers */

#if !defined(LWC_FUZZ_STANDALONE) && !defined(LWC_FUZZ_THREADS)

int LLVMFuzzerInitialize(int* argc, char*** argv) {
  (void)argc;
  (void)argv;
  setup();
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Program pr;
  static int ready;
  if (!ready) {
    program_init(&pr, 0);
    ready = 1;
  }
  run_program(&pr, data, size);
  return 0;
}

#else

static uint64_t splitmix(uint64_t* state) {
  uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

static void random_program(uint64_t* state, uint8_t* buf, size_t n) {
  size_t i;
  for (i = 0; i < n; ++i) buf[i] = (uint8_t)splitmix(state);
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

#endif

#ifdef LWC_FUZZ_STANDALONE
/* capi_fuzz SECONDS [SEED] */
int main(int argc, char** argv) {
  double seconds = argc > 1 ? atof(argv[1]) : 10, start;
  uint64_t state = argc > 2 ? strtoull(argv[2], NULL, 10) : 1;
  uint8_t buf[512];
  long programs = 0;
  Program pr;
  setup();
  program_init(&pr, 0);
  start = now();
  while (now() - start < seconds) {
    random_program(&state, buf, sizeof(buf));
    run_program(&pr, buf, 64 + buf[0] * 2);
    ++programs;
  }
  printf("capi_fuzz: %ld programs in %.0f s, no failure\n", programs, now() - start);
  return 0;
}
#endif

#ifdef LWC_FUZZ_THREADS
#include <pthread.h>

typedef struct {
  int tag;
  double seconds;
  const float* reference;
  size_t ref_bytes;
  int programs; /* also run random programs between the checked runs */
  long runs, mismatches;
  Program pr; /* set up by main (program_init is not thread-safe) */
} Worker;

/* Load the good model, feed set_all_inputs' data, return output 0 (malloc'd). */
static float* reference_output(size_t* nbytes) {
  lwc_model* m = NULL;
  lwc_tensor_info info;
  float* out;
  if (lwc_model_load(g_model, &m) != LWC_OK) {
    fprintf(stderr, "load: %s\n", lwc_last_error());
    exit(1);
  }
  set_all_inputs(m);
  if (lwc_model_run(m) != LWC_OK || lwc_model_output_info(m, 0, &info) != LWC_OK) {
    fprintf(stderr, "run: %s\n", lwc_last_error());
    exit(1);
  }
  out = (float*)malloc(info.nbytes);
  lwc_model_get_output(m, 0, out, info.nbytes);
  *nbytes = info.nbytes;
  lwc_model_free(m);
  return out;
}

static void* worker_main(void* arg) {
  Worker* w = (Worker*)arg;
  uint64_t state = (uint64_t)w->tag * 7919 + 1;
  uint8_t buf[256];
  double start = now();
  while (now() - start < w->seconds) {
    lwc_model* m = NULL;
    float* out = (float*)malloc(w->ref_bytes);
    /* the good model from this thread: outputs equal the single-threaded ones */
    if (lwc_model_load(g_model, &m) == LWC_OK) {
      set_all_inputs(m);
      if (lwc_model_run(m) != LWC_OK || lwc_model_get_output(m, 0, out, w->ref_bytes) != LWC_OK ||
          memcmp(out, w->reference, w->ref_bytes) != 0) {
        ++w->mismatches;
      }
      lwc_model_free(m);
    } else {
      ++w->mismatches;
    }
    free(out);
    ++w->runs;
    if (w->programs) {
      random_program(&state, buf, sizeof(buf));
      run_program(&w->pr, buf, 32 + buf[0] % 128);
    }
  }
  return NULL;
}

/* capi_threads SECONDS [THREADS [PROGRAMS]] (PROGRAMS 0: checked runs only) */
int main(int argc, char** argv) {
  double seconds = argc > 1 ? atof(argv[1]) : 10;
  int threads = argc > 2 ? atoi(argv[2]) : 4, i;
  int programs = argc > 3 ? atoi(argv[3]) : 1;
  pthread_t tid[16];
  Worker w[16];
  size_t ref_bytes;
  float* reference;
  long runs = 0, bad = 0;
  lwc_model* keeper = NULL;
  setup();
  reference = reference_output(&ref_bytes);
  /* one handle open throughout, so the library stays mapped while threads load and free
   * their own (otherwise each last free unmaps it and ThreadSanitizer's memory grows with
   * every remap) */
  if (lwc_model_load(g_model, &keeper) != LWC_OK) return 1;
  if (threads > 16) threads = 16;
  for (i = 0; i < threads; ++i) {
    w[i].tag = i + 1;
    w[i].seconds = seconds;
    w[i].reference = reference;
    w[i].ref_bytes = ref_bytes;
    w[i].programs = programs;
    w[i].runs = w[i].mismatches = 0;
    program_init(&w[i].pr, i + 1);
    pthread_create(&tid[i], NULL, worker_main, &w[i]);
  }
  for (i = 0; i < threads; ++i) {
    pthread_join(tid[i], NULL);
    runs += w[i].runs;
    bad += w[i].mismatches;
  }
  free(reference);
  lwc_model_free(keeper);
  printf("capi_threads: %d threads, %ld runs of the good model, %ld differ from one thread's\n",
         threads, runs, bad);
  return bad == 0 ? 0 : 1;
}
#endif
