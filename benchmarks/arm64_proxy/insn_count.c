/* Minimal QEMU 7.2 TCG plugin (plugin API v1) for aarch64 guests: count executed guest
 * instructions, total and by encoding class, with inline per-TB adds (one counter set: fine for
 * single-threaded guests). At exit prints "insns N", "tbs N" and "cls_<name> N" lines to the file
 * given by arg outfile=PATH (else to qemu's log/stderr). Debian's qemu-user ships no
 * qemu-plugin.h, so the few declarations used are vendored below, copied from QEMU 7.2's
 * include/qemu/qemu-plugin.h (QEMU_PLUGIN_VERSION 1); build: gcc -O2 -shared -fPIC.
 * Classes (AArch64 top-level decode, bits 28:25, plus a few opcodes):
 *   sme, sve, dp_imm, branch_sys, ldst_gpr, ldst_simd (loads/stores of FP/SIMD registers, any width), dp_reg,
 *   simd_vec / simd_scalar (other Advanced SIMD vector / scalar ops), fp_scalar (scalar FP other than fp_fmadd),
 *   fp_fmadd (scalar FMADD/FMSUB/FNMADD/FNMSUB), fmla (FMLA/FMLS vector or by element, any width),
 *   dot (SDOT/UDOT vector or by element), int_mac (MLA, SMLAL/UMLAL, SMULL/UMULL, SADALP/UADALP vector). */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <stdbool.h>
#include <stdlib.h>
typedef uint64_t qemu_plugin_id_t;
struct qemu_plugin_tb;
struct qemu_plugin_insn;
typedef struct qemu_info_t qemu_info_t;
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 };
typedef void (*qemu_plugin_vcpu_tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb* tb);
typedef void (*qemu_plugin_udata_cb_t)(qemu_plugin_id_t id, void* userdata);
void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_tb_trans_cb_t cb);
void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb* tb, enum qemu_plugin_op op, void* ptr, uint64_t imm);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb* tb);
struct qemu_plugin_insn* qemu_plugin_tb_get_insn(const struct qemu_plugin_tb* tb, size_t idx);
const void* qemu_plugin_insn_data(const struct qemu_plugin_insn* insn);
size_t qemu_plugin_insn_size(const struct qemu_plugin_insn* insn);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, qemu_plugin_udata_cb_t cb, void* userdata);
void qemu_plugin_outs(const char* string);
uint64_t qemu_plugin_tb_vaddr(const struct qemu_plugin_tb* tb);

__attribute__((visibility("default"))) int qemu_plugin_version = 1;

enum { C_SME, C_SVE, C_DPIMM, C_BR, C_LDST_GPR, C_LDST_SIMD, C_DPREG, C_SIMDVEC, C_SIMDSCAL, C_FPSCAL, C_FMADD,
       C_FMLA, C_DOT, C_INTMAC, C_OTHER, NCLS };
static const char* cls_name[NCLS] = {"sme", "sve", "dp_imm", "branch_sys", "ldst_gpr", "ldst_simd", "dp_reg",
                                     "simd_vec", "simd_scalar", "fp_scalar", "fp_fmadd", "fmla", "dot", "int_mac", "other"};
static uint64_t insn_count, tb_count, cls_count[NCLS];
static char outfile[1024];
static bool classify = true;
/* tbfile=PATH: also one line per translated block, "vaddr n_insns executions", so counts can
 * be attributed to the functions of the guest's libraries (benchmarks/arm64_proxy.py kernels) */
static char tbfile[1024];
struct tb_rec { uint64_t vaddr, n, exec; };
#define TB_CHUNK 65536
struct tb_chunk { struct tb_rec recs[TB_CHUNK]; size_t n; struct tb_chunk* next; };
static struct tb_chunk* chunks;  /* newest first; never freed (the inline adds point into them) */

static int classify_insn(uint32_t w) {
  uint32_t op0 = (w >> 25) & 0xF;
  if (op0 == 0x0) return (w >> 31) ? C_SME : C_OTHER;
  if (op0 == 0x2) return C_SVE;
  if ((op0 & 0xE) == 0x8) return C_DPIMM;
  if ((op0 & 0xE) == 0xA) return C_BR;
  if ((op0 & 0x5) == 0x4) return ((w >> 26) & 1) ? C_LDST_SIMD : C_LDST_GPR;
  if ((op0 & 0x7) == 0x5) return C_DPREG;
  if ((op0 & 0x7) == 0x7) {
    if ((w & 0xBF20FC00) == 0x0E20CC00) return C_FMLA;   /* FMLA/FMLS vector, single/double */
    if ((w & 0xBF60FC00) == 0x0E400C00) return C_FMLA;   /* FMLA/FMLS vector, half */
    if ((w & 0xBF80B400) == 0x0F801000) return C_FMLA;   /* FMLA/FMLS by element, single/double */
    if ((w & 0xBFC0B400) == 0x0F001000) return C_FMLA;   /* FMLA/FMLS by element, half */
    if ((w & 0x9FE0FC00) == 0x0E809400) return C_DOT;    /* SDOT/UDOT vector */
    if ((w & 0x9FC0F400) == 0x0F80E000) return C_DOT;    /* SDOT/UDOT by element */
    if ((w & 0xBF20FC00) == 0x0E209400) return C_INTMAC; /* MLA vector */
    if ((w & 0x9F20BC00) == 0x0E208000) return C_INTMAC; /* SMLAL/UMLAL(2), SMLSL/UMLSL(2) vector */
    if ((w & 0x9F20FC00) == 0x0E20C000) return C_INTMAC; /* SMULL/UMULL(2) vector */
    if ((w & 0x9F3FFC00) == 0x0E206800) return C_INTMAC; /* SADALP/UADALP */
    if (!((w >> 28) & 1)) return C_SIMDVEC;             /* other Advanced SIMD vector ops */
    if ((w >> 30) & 1) return C_SIMDSCAL;                /* Advanced SIMD scalar */
    if ((w & 0x5F000000) == 0x1F000000) return C_FMADD;  /* scalar FMADD/FMSUB/FNMADD/FNMSUB */
    return C_FPSCAL;                                     /* other scalar FP (FMUL, FADD, FMOV, FCVT...) */
  }
  return C_OTHER;
}

static void tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb* tb) {
  size_t n = qemu_plugin_tb_n_insns(tb);
  qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &insn_count, n);
  qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &tb_count, 1);
  if (tbfile[0]) {
    if (!chunks || chunks->n == TB_CHUNK) {
      struct tb_chunk* c = calloc(1, sizeof *c);
      if (c) { c->next = chunks; chunks = c; }
    }
    if (chunks && chunks->n < TB_CHUNK) {
      struct tb_rec* r = &chunks->recs[chunks->n++];
      r->vaddr = qemu_plugin_tb_vaddr(tb); r->n = n;
      qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &r->exec, 1);
    }
  }
  if (!classify) return;
  uint64_t c[NCLS] = {0};
  for (size_t i = 0; i < n; i++) {
    struct qemu_plugin_insn* insn = qemu_plugin_tb_get_insn(tb, i);
    uint32_t w = 0;
    if (qemu_plugin_insn_size(insn) == 4) memcpy(&w, qemu_plugin_insn_data(insn), 4);
    c[classify_insn(w)]++;
  }
  for (int k = 0; k < NCLS; k++)
    if (c[k]) qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &cls_count[k], c[k]);
}
static void dump_tbs(void) {
  FILE* f = fopen(tbfile, "w");
  if (!f) return;
  for (struct tb_chunk* c = chunks; c; c = c->next)
    for (size_t i = 0; i < c->n; i++)
      if (c->recs[i].exec)
        fprintf(f, "%llx %llu %llu\n", (unsigned long long)c->recs[i].vaddr, (unsigned long long)c->recs[i].n,
                (unsigned long long)c->recs[i].exec);
  fclose(f);
}
static void at_exit(qemu_plugin_id_t id, void* p) {
  if (tbfile[0]) dump_tbs();
  char buf[1024]; int o = 0;
  o += snprintf(buf + o, sizeof buf - o, "insns %llu\ntbs %llu\n", (unsigned long long)insn_count, (unsigned long long)tb_count);
  if (classify)
    for (int k = 0; k < NCLS; k++) o += snprintf(buf + o, sizeof buf - o, "cls_%s %llu\n", cls_name[k], (unsigned long long)cls_count[k]);
  if (outfile[0]) { FILE* f = fopen(outfile, "w"); if (f) { fputs(buf, f); fclose(f); return; } }
  qemu_plugin_outs(buf);
}
__attribute__((visibility("default"))) int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t* info, int argc, char** argv) {
  for (int i = 0; i < argc; i++) {
    if (!strncmp(argv[i], "outfile=", 8)) snprintf(outfile, sizeof outfile, "%s", argv[i] + 8);
    if (!strcmp(argv[i], "classify=off")) classify = false;
    if (!strncmp(argv[i], "tbfile=", 7)) snprintf(tbfile, sizeof tbfile, "%s", argv[i] + 7);
  }
  qemu_plugin_register_vcpu_tb_trans_cb(id, tb_trans);
  qemu_plugin_register_atexit_cb(id, at_exit, NULL);
  return 0;
}
