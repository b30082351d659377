/* fc_fused_ew: straight-line elementwise programs (vertical fusion), encoding in kernels.h.
 *
 * A block interpreter: the output is computed in blocks of up to FUSED_BLOCK elements, and each
 * instruction is one tight loop over the block, so the dispatch costs once per instruction per
 * block while the loops vectorise like the unfused kernels'. Registers live in one fixed stack
 * workspace: before running, a liveness pass drops instructions whose value is never used, gives
 * each live value a slot only while it is live (slots are reused), and picks the block length so
 * that all slots fit. Moving data is what costs here (each pass over a block is L1 traffic), so:
 * FULL inputs are read in place, SCALAR inputs and CONST values are filled once per call, and the
 * last instruction writes straight into out unless out overlaps a FULL input. A destination slot
 * is taken before the operands' slots are released, so an instruction never writes memory it
 * reads (which is what lets the loops use restrict). */
#include <string.h>

#include "flexcore/ew_math.h"
#include "flexcore/kernels.h"
#include "kernel_util.h"
#include "vmath.h"

#define FUSED_BLOCK 256
#define WS_BYTES 32768 /* the register workspace, on the stack */
#define MAX_REGS (FC_FUSED_MAX_INPUTS + FC_FUSED_MAX_INSTR)
#define ROW_ALIGN 64   /* rows at least this long are not split across blocks */

/* Register operands each opcode reads (CONST reads none: its field a indexes consts). */
static int arity(int opcode)
{
    if (opcode <= FC_EW_RELU) {
        return 1;
    }
    if (opcode <= FC_EW_NE) {
        return 2;
    }
    return opcode == FC_EW_WHERE ? 3 : 0;
}

typedef struct fused_plan {
    int live[FC_FUSED_MAX_INSTR];  /* instruction k is executed */
    int slot[MAX_REGS];            /* workspace slot of a register; -1: FULL input, not live, or
                                      the result written straight into out */
    int pinned[MAX_REGS];          /* filled once per call (a SCALAR input, a CONST), not per block */
    int direct_out;                /* the last instruction writes into out (no FULL input overlaps it) */
    int row_aligned;               /* blocks end at row ends, so ROW inputs are read in place */
    int n_slots;
    int64_t block;                 /* elements per block, a multiple of 8 */
} fused_plan;

/* Whether [a, a + a_bytes) and [b, b + b_bytes) overlap. */
static int overlaps_span(const void* a, int64_t a_bytes, const void* b, int64_t b_bytes)
{
    const uintptr_t x = (uintptr_t)a, y = (uintptr_t)b;
    return x < y + (uintptr_t)b_bytes && y < x + (uintptr_t)a_bytes;
}

/* Whether rows x cols elements ld apart from a overlap the n elements at out (only the rows'
 * span is compared: a STRIDED input may not share even the gaps between its rows with out). */
static int overlaps_strided(const void* a, int64_t rows, int64_t cols, int64_t ld, const void* out, int64_t n,
                            int64_t size)
{
    return overlaps_span(a, ((rows - 1) * ld + cols) * size, out, n * size);
}

/* Checks the program and its inputs (kernels.h lists the rules) and plans the slots. */
static int fused_prepare(int dtype, int n_inputs, const void* const* inputs, const int32_t* modes,
                         const int64_t* lens, int64_t n, int64_t cols, int n_instr, const int32_t* code,
                         int n_consts, const double* consts, const void* out, int64_t out_ld, fused_plan* plan)
{
    if (dtype != FC_F32 && dtype != FC_F64) {
        return FC_ERR_DTYPE;
    }
    if (n_inputs < 0 || n_inputs > FC_FUSED_MAX_INPUTS || n_instr < 1 || n_instr > FC_FUSED_MAX_INSTR ||
        n_consts < 0 || n < 0 || ku_mul(n, ku_dtype_size(dtype)) < 0) {
        return FC_ERR_SIZE;
    }
    if (code == NULL || (n_inputs > 0 && (inputs == NULL || modes == NULL || lens == NULL)) ||
        (n_consts > 0 && consts == NULL) || ku_bad_ptr(out, n)) {
        return FC_ERR_NULL;
    }
    if (n > 0 && (cols < 1 || n % cols != 0)) {
        return FC_ERR_SIZE;
    }
    /* out: rows of cols elements, out_ld apart; the span is (rows - 1) * out_ld + cols elements */
    int64_t out_span = n;
    if (n > 0 && out_ld != cols) {
        if (out_ld < cols || ku_mul(n / cols, out_ld) < 0 || ku_mul(n / cols * out_ld, ku_dtype_size(dtype)) < 0) {
            return FC_ERR_SIZE;
        }
        out_span = (n / cols - 1) * out_ld + cols;
    }
    for (int k = 0; k < n_instr; ++k) {
        const int32_t* ins = code + 4 * k;
        if (ins[0] < 0 || ins[0] >= FC_EW_CODE_COUNT) {
            return FC_ERR_OP;
        }
        for (int j = 0; j < arity(ins[0]); ++j) {
            if (ins[1 + j] < 0 || ins[1 + j] >= n_inputs + k) {
                return FC_ERR_INDEX;
            }
        }
        if (ins[0] == FC_EW_CONST && (ins[1] < 0 || ins[1] >= n_consts)) {
            return FC_ERR_INDEX;
        }
    }
    for (int j = 0; j < n_inputs; ++j) {
        if (modes[j] < 0 || modes[j] >= FC_IN_MODE_COUNT) {
            return FC_ERR_OP;
        }
        if (n == 0) {
            continue;
        }
        if (modes[j] == FC_IN_STRIDED) {
            /* (rows - 1) * ld + cols elements, the last row's end: rows * ld bounds it */
            if (lens[j] < cols || ku_mul(n / cols, lens[j]) < 0 || ku_mul(n / cols * lens[j], ku_dtype_size(dtype)) < 0) {
                return FC_ERR_SIZE;
            }
            continue;
        }
        const int64_t want[FC_IN_MODE_COUNT] = {n, 1, cols, n / cols, 0};
        if (lens[j] != want[modes[j]]) {
            return FC_ERR_SIZE;
        }
    }

    /* Liveness, backwards from the result: used[r] says some live instruction reads r, and
     * last_use[r] is the last such instruction. */
    const int n_regs = n_inputs + n_instr;
    int used[MAX_REGS], last_use[MAX_REGS];
    for (int r = 0; r < n_regs; ++r) {
        used[r] = 0;
        last_use[r] = -1;
    }
    used[n_regs - 1] = 1;
    last_use[n_regs - 1] = n_instr; /* the result stays live to the end */
    for (int k = n_instr - 1; k >= 0; --k) {
        plan->live[k] = used[n_inputs + k];
        if (!plan->live[k]) {
            continue;
        }
        const int32_t* ins = code + 4 * k;
        for (int j = 0; j < arity(ins[0]); ++j) {
            const int r = ins[1 + j];
            used[r] = 1;
            if (last_use[r] < k) {
                last_use[r] = k;
            }
        }
    }
    for (int j = 0; j < n_inputs; ++j) {
        if (used[j] && ku_bad_ptr(inputs[j], n)) {
            return FC_ERR_NULL;
        }
    }

    /* The result goes straight into out unless out overlaps a FULL input (then the last block
     * would overwrite what it still reads; an exact alias is allowed, so this happens). */
    plan->direct_out = 1;
    for (int j = 0; j < n_inputs; ++j) {
        if (used[j] && modes[j] == FC_IN_STRIDED && n > 0 &&
            overlaps_strided(inputs[j], n / cols, cols, lens[j], out, out_span, ku_dtype_size(dtype))) {
            return FC_ERR_OVERLAP;
        }
        if (used[j] && modes[j] == FC_IN_FULL && n > 0 &&
            overlaps_span(inputs[j], n * ku_dtype_size(dtype), out, out_span * ku_dtype_size(dtype))) {
            if (out_span != n) { /* only an exact alias of a dense out is allowed */
                return FC_ERR_OVERLAP;
            }
            plan->direct_out = 0;
        }
    }

    /* Slots: a stack of free ones. SCALAR inputs and CONST values are pinned (filled once per
     * call, never released); ROW and COL inputs are filled into a slot per block. */
    int free_slots[MAX_REGS], n_free = 0, n_slots = 0;
    for (int r = 0; r < n_regs; ++r) {
        plan->slot[r] = -1;
        plan->pinned[r] = r < n_inputs ? used[r] && modes[r] == FC_IN_SCALAR
                                       : r < n_regs - 1 && plan->live[r - n_inputs] &&
                                             code[4 * (r - n_inputs)] == FC_EW_CONST;
    }
#define TAKE_SLOT(r)                                                                               \
    do {                                                                                           \
        plan->slot[r] = n_free > 0 ? free_slots[--n_free] : n_slots++;                             \
    } while (0)
    for (int r = 0; r < n_regs; ++r) {
        if (plan->pinned[r]) {
            TAKE_SLOT(r);
        }
    }
    /* Rows of at least ROW_ALIGN elements: blocks stop at the end of a row (costing at most one
     * short block per row), and a ROW input is then read in place instead of being copied. */
    plan->row_aligned = cols >= ROW_ALIGN || out_span != n; /* a strided out: blocks never cross a row */
    for (int j = 0; j < n_inputs; ++j) {
        if (used[j] && (modes[j] == FC_IN_COL ||
                        ((modes[j] == FC_IN_ROW || modes[j] == FC_IN_STRIDED) && !plan->row_aligned))) {
            TAKE_SLOT(j);
        }
    }
    for (int k = 0; k < n_instr; ++k) {
        const int r_out = n_inputs + k;
        if (!plan->live[k] || plan->pinned[r_out]) {
            continue;
        }
        if (k < n_instr - 1 || !plan->direct_out) {
            TAKE_SLOT(r_out);
        }
        const int32_t* ins = code + 4 * k;
        for (int j = 0; j < arity(ins[0]); ++j) {
            const int r = ins[1 + j];
            if (last_use[r] == k && plan->slot[r] >= 0 && !plan->pinned[r] && (j == 0 || ins[1] != r) &&
                (j < 2 || ins[2] != r)) {
                free_slots[n_free++] = plan->slot[r]; /* released once, however often it is read */
            }
        }
    }
#undef TAKE_SLOT
    plan->n_slots = n_slots;
    const int64_t ws_elems = WS_BYTES / ku_dtype_size(dtype);
    int64_t block = n_slots > 0 ? ws_elems / n_slots : FUSED_BLOCK;
    block = block > FUSED_BLOCK ? FUSED_BLOCK : block;
    plan->block = block - block % 8; /* n_slots <= MAX_REGS keeps this >= 32 */
    return FC_OK;
}

/* float32 exp, log, tanh and sigmoid: the vectorised versions (vmath.h); float64 keeps libm. */
static int vmath_exec_f32(int op, int64_t m, float* d, const float* a)
{
    const fc_vmath_table* t = fc_vmath_f32();
    const fc_vmath_fn fn = op == FC_EW_EXP ? t->exp : op == FC_EW_LOG ? t->log
                           : op == FC_EW_TANH ? t->tanh : op == FC_EW_SIGMOID ? t->sigmoid : NULL;
    if (fn == NULL) {
        return 0;
    }
    fn(a, d, m);
    return 1;
}

static int vmath_exec_f64(int op, int64_t m, double* d, const double* a)
{
    (void)op, (void)m, (void)d, (void)a;
    return 0;
}

/* One loop per opcode over a block of m elements: d never aliases a, b or c. */
#define DEFINE_FUSED_OPS(T, SFX)                                                                   \
    static void fused_exec_##SFX(int op, int64_t m, T* restrict d, const T* restrict a,            \
                                 const T* restrict b, const T* restrict c, T konst)                \
    {                                                                                              \
        if (vmath_exec_##SFX(op, m, d, a)) {                                                       \
            return;                                                                                \
        }                                                                                          \
        switch (op) {                                                                              \
            UNARY(FC_EW_NEG, fc_ew_neg_##SFX)                                                      \
            UNARY(FC_EW_EXP, fc_ew_exp_##SFX)                                                      \
            UNARY(FC_EW_LOG, fc_ew_log_##SFX)                                                      \
            UNARY(FC_EW_LOG1P, fc_ew_log1p_##SFX)                                                  \
            UNARY(FC_EW_SQRT, fc_ew_sqrt_##SFX)                                                    \
            UNARY(FC_EW_ABS, fc_ew_abs_##SFX)                                                      \
            UNARY(FC_EW_SIGMOID, fc_ew_sigmoid_##SFX)                                              \
            UNARY(FC_EW_TANH, fc_ew_tanh_##SFX)                                                    \
            UNARY(FC_EW_ARCTAN, fc_ew_arctan_##SFX)                                                \
            UNARY(FC_EW_SIGN, fc_ew_sign_##SFX)                                                    \
            UNARY(FC_EW_STEP, fc_ew_step_##SFX)                                                    \
            UNARY(FC_EW_RELU, fc_ew_relu_##SFX)                                                    \
            BINARY(T, FC_EW_ADD, fc_ew_add_##SFX(x, y))                                               \
            BINARY(T, FC_EW_SUB, fc_ew_sub_##SFX(x, y))                                               \
            BINARY(T, FC_EW_MUL, fc_ew_mul_##SFX(x, y))                                               \
            BINARY(T, FC_EW_DIV, fc_ew_div_##SFX(x, y))                                               \
            BINARY(T, FC_EW_POW, fc_ew_pow_##SFX(x, y))                                               \
            BINARY(T, FC_EW_MAX, fc_ew_maximum_##SFX(x, y))                                           \
            BINARY(T, FC_EW_MIN, fc_ew_minimum_##SFX(x, y))                                           \
            BINARY(T, FC_EW_GT, x > y ? (T)1 : (T)0)                                                  \
            BINARY(T, FC_EW_GE, x >= y ? (T)1 : (T)0)                                                 \
            BINARY(T, FC_EW_LT, x < y ? (T)1 : (T)0)                                                  \
            BINARY(T, FC_EW_LE, x <= y ? (T)1 : (T)0)                                                 \
            BINARY(T, FC_EW_EQ, x == y ? (T)1 : (T)0)                                                 \
            BINARY(T, FC_EW_NE, x != y ? (T)1 : (T)0)                                                 \
        case FC_EW_WHERE: /* both loads unconditional: a select, which vectorises */               \
            for (int64_t i = 0; i < m; ++i) {                                                      \
                const T x = b[i], y = c[i];                                                        \
                d[i] = a[i] != (T)0 ? x : y;                                                       \
            }                                                                                      \
            break;                                                                                 \
        default: /* FC_EW_CONST; the program was checked */                                        \
            for (int64_t i = 0; i < m; ++i) {                                                      \
                d[i] = konst;                                                                      \
            }                                                                                      \
            break;                                                                                 \
        }                                                                                          \
    }

#define UNARY(OP, FN)                                                                              \
    case OP:                                                                                       \
        for (int64_t i = 0; i < m; ++i) {                                                          \
            d[i] = FN(a[i]);                                                                       \
        }                                                                                          \
        break;

#define BINARY(T, OP, EXPR)                                                                           \
    case OP:                                                                                       \
        for (int64_t i = 0; i < m; ++i) {                                                          \
            const T x = a[i], y = b[i];                                                            \
            d[i] = EXPR;                                                                           \
        }                                                                                          \
        break;

DEFINE_FUSED_OPS(float, f32)
DEFINE_FUSED_OPS(double, f64)

#undef UNARY
#undef BINARY

typedef union fused_ws {
    float f32[WS_BYTES / sizeof(float)];
    double f64[WS_BYTES / sizeof(double)];
} fused_ws;

/* Fills d[0 .. m) with elements start .. start+m of a ROW, COL or STRIDED (rows ld apart) input. */
#define DEFINE_FILL_INPUT(T, SFX)                                                                  \
    static void fill_input_##SFX(int mode, const T* src, int64_t start, int64_t m, int64_t cols,    \
                                 int64_t ld, T* d)                                                  \
    {                                                                                              \
        int64_t q = start / cols, r = start % cols; /* row q, column r of element start */         \
        for (int64_t i = 0; i < m;) {                                                              \
            const int64_t run = cols - r < m - i ? cols - r : m - i;                               \
            if (mode == FC_IN_ROW) {                                                               \
                memcpy(d + i, src + r, (size_t)run * sizeof(T));                                   \
            } else if (mode == FC_IN_STRIDED) {                                                    \
                memcpy(d + i, src + q * ld + r, (size_t)run * sizeof(T));                          \
            } else {                                                                               \
                const T v = src[q];                                                                \
                for (int64_t j = 0; j < run; ++j) {                                                \
                    d[i + j] = v;                                                                  \
                }                                                                                  \
            }                                                                                      \
            i += run;                                                                              \
            r = 0;                                                                                 \
            ++q;                                                                                   \
        }                                                                                          \
    }

DEFINE_FILL_INPUT(float, f32)
DEFINE_FILL_INPUT(double, f64)

#define DEFINE_FUSED_RUN(T, SFX)                                                                   \
    static void fused_run_##SFX(const fused_plan* plan, int n_inputs, const void* const* inputs,   \
                                const int32_t* modes, const int64_t* lens, int64_t n, int64_t cols, \
                                int n_instr, const int32_t* code, const double* consts, T* out,    \
                                int64_t out_ld)                                                    \
    {                                                                                              \
        _Alignas(64) fused_ws ws;                                                                  \
        const T* reg[MAX_REGS];                                                                    \
        const int n_regs = n_inputs + n_instr;                                                     \
        const int64_t block = plan->block;                                                         \
        for (int r = 0; r < n_regs; ++r) { /* pinned registers: one fill for the whole call */     \
            if (!plan->pinned[r]) {                                                                \
                continue;                                                                          \
            }                                                                                      \
            T* d = ws.SFX + plan->slot[r] * block;                                                 \
            T v;                                                                                   \
            if (r < n_inputs) {                                                                    \
                v = ((const T*)inputs[r])[0];                                                      \
            } else {                                                                               \
                v = (T)consts[code[4 * (r - n_inputs) + 1]];                                       \
            }                                                                                      \
            for (int64_t i = 0; i < block; ++i) {                                                  \
                d[i] = v;                                                                          \
            }                                                                                      \
            reg[r] = d;                                                                            \
        }                                                                                          \
        for (int64_t start = 0, m; start < n; start += m) {                                        \
            m = n - start < block ? n - start : block;                                             \
            const int64_t col = start % cols;                                                      \
            if (plan->row_aligned && m > cols - col) {                                             \
                m = cols - col;                                                                    \
            }                                                                                      \
            T* const out_block = out + start / cols * out_ld + col; /* rows never split if strided */ \
            for (int j = 0; j < n_inputs; ++j) {                                                   \
                const T* src = (const T*)inputs[j];                                                \
                if (plan->pinned[j]) {                                                             \
                    continue;                                                                      \
                }                                                                                  \
                if (plan->slot[j] >= 0) {                                                          \
                    T* d = ws.SFX + plan->slot[j] * block;                                         \
                    fill_input_##SFX(modes[j], src, start, m, cols, lens[j], d);                   \
                    reg[j] = d;                                                                    \
                } else if (src == NULL) { /* not read by any live instruction */                   \
                    reg[j] = NULL;                                                                 \
                } else {                                                                           \
                    reg[j] = modes[j] == FC_IN_FULL      ? src + start                             \
                             : modes[j] == FC_IN_STRIDED ? src + start / cols * lens[j] + col      \
                                                         : src + col; /* or an aligned ROW */      \
                }                                                                                  \
            }                                                                                      \
            for (int k = 0; k < n_instr; ++k) {                                                    \
                if (!plan->live[k] || plan->pinned[n_inputs + k]) {                                \
                    continue;                                                                      \
                }                                                                                  \
                const int32_t* ins = code + 4 * k;                                                 \
                const int nargs = arity(ins[0]);                                                   \
                const int slot = plan->slot[n_inputs + k];                                         \
                T* d = slot >= 0 ? ws.SFX + slot * block : out_block;                              \
                fused_exec_##SFX(ins[0], m, d, nargs > 0 ? reg[ins[1]] : NULL,                     \
                                 nargs > 1 ? reg[ins[2]] : NULL, nargs > 2 ? reg[ins[3]] : NULL,   \
                                 ins[0] == FC_EW_CONST ? (T)consts[ins[1]] : (T)0);                \
                reg[n_inputs + k] = d;                                                             \
            }                                                                                      \
            if (!plan->direct_out) {                                                               \
                memcpy(out_block, reg[n_regs - 1], (size_t)m * sizeof(T));                         \
            }                                                                                      \
        }                                                                                          \
    }

DEFINE_FUSED_RUN(float, f32)
DEFINE_FUSED_RUN(double, f64)

int fc_fused_ew_ld(int dtype, int n_inputs, const void* const* inputs, const int32_t* input_modes,
                   const int64_t* input_lens, int64_t n, int64_t cols, int n_instr, const int32_t* code,
                   int n_consts, const double* consts, void* out, int64_t out_ld)
{
    fused_plan plan;
    const int status = fused_prepare(dtype, n_inputs, inputs, input_modes, input_lens, n, cols, n_instr, code,
                                     n_consts, consts, out, out_ld, &plan);
    if (status != FC_OK || n == 0) {
        return status;
    }
    if (dtype == FC_F32) {
        fused_run_f32(&plan, n_inputs, inputs, input_modes, input_lens, n, cols, n_instr, code, consts, (float*)out,
                      out_ld);
    } else {
        fused_run_f64(&plan, n_inputs, inputs, input_modes, input_lens, n, cols, n_instr, code, consts,
                      (double*)out, out_ld);
    }
    return FC_OK;
}

int fc_fused_ew(int dtype, int n_inputs, const void* const* inputs, const int32_t* input_modes,
                const int64_t* input_lens, int64_t n, int64_t cols, int n_instr, const int32_t* code, int n_consts,
                const double* consts, void* out)
{
    return fc_fused_ew_ld(dtype, n_inputs, inputs, input_modes, input_lens, n, cols, n_instr, code, n_consts, consts,
                          out, cols);
}
