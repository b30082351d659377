// One validate and one execute function per opcode (the encodings are documented at fc_opcode in
// flexcore/executor.h). Validation runs once, at program creation: it checks immediates and the
// byte extent of every access (check_dense / check_strided), so an execute function only reads
// immediates and calls a kernel. Kernels check their arguments again and return a status; a bad
// status stops the run.
#include <cstring>
#include <limits>

#include "flexcore/conv.h"
#include "flexcore/flexcore.h"
#include "flexcore/gemm.h"
#include "flexcore/rnn.h"
#include "program.hpp"

namespace fcx {

namespace {

bool is_float(int64_t dt) { return dt == FC_F32 || dt == FC_F64; }

int64_t operand(const Program& p, const Instr& ins, int64_t k)
{
    return p.code[ins.operands + static_cast<std::size_t>(k)];
}

const void* cin(const RunContext& ctx, const Instr& ins, int64_t i) { return ctx.ptr(ctx.prog.in(ins, i)); }
void* cout(const RunContext& ctx, const Instr& ins, int64_t i) { return ctx.ptr(ctx.prog.out(ins, i)); }

bool fits_int(int64_t v) { return v >= 0 && v <= std::numeric_limits<int>::max(); }

// Product of n non-negative values; false on overflow or a negative value.
bool product(const int64_t* v, int64_t n, int64_t* r)
{
    int64_t acc = 1;
    for (int64_t i = 0; i < n; ++i) {
        if (!mul_ok(acc, v[i], &acc)) {
            return false;
        }
    }
    *r = acc;
    return true;
}

// Immediates of an op with a shape: [.., ndim, shape[ndim], strides...]: ndim in range and the
// immediates present.
bool shape_layout(const Instr& ins, int64_t head, int64_t ndim, int64_t n_arrays)
{
    return ndim >= 0 && ndim <= FC_MAX_NDIM && ins.n_int == head + ndim * (1 + n_arrays) && ins.n_dbl == 0;
}

// ---------------------------------------------------------------- CALLBACK
int validate_callback(Program& p, Instr& ins)
{
    // [index, nbytes of each operand]: the host wraps the pointers with these sizes.
    if (ins.n_int != 1 + ins.n_in + ins.n_out || ins.n_dbl != 0 || p.imm(ins, 0) < 0) {
        return FC_ERR_PROGRAM;
    }
    for (int64_t k = 0; k < ins.n_in + ins.n_out; ++k) {
        if (!check_bytes(p, operand(p, ins, k), p.imm(ins, 1 + k))) {
            return FC_ERR_PROGRAM;
        }
    }
    return FC_OK;
}

int execute_callback(RunContext& ctx, const Instr& ins)
{
    Program& p = ctx.prog;
    for (int64_t k = 0; k < ins.n_in + ins.n_out; ++k) {
        p.operand_ptrs[static_cast<std::size_t>(k)] = ctx.ptr(operand(p, ins, k));
    }
    return ctx.cb(ctx.user, p.imm(ins, 0), p.operand_ptrs.data()) == 0 ? FC_OK : FC_ERR_CALLBACK;
}

// ---------------------------------------------------------------- COPY, FILL, COPY_STRIDED
int validate_copy(Program& p, Instr& ins)
{
    const int64_t n = ins.n_int == 1 ? p.imm(ins, 0) : -1;
    if (ins.n_dbl != 0 || !check_bytes(p, p.in(ins, 0), n) || !check_bytes(p, p.out(ins, 0), n)) {
        return FC_ERR_PROGRAM;
    }
    return FC_OK;
}

int execute_copy(RunContext& ctx, const Instr& ins)
{
    const auto n = static_cast<std::size_t>(ctx.prog.imm(ins, 0));
    if (n > 0) {
        std::memcpy(cout(ctx, ins, 0), cin(ctx, ins, 0), n);
    }
    return FC_OK;
}

int validate_fill(Program& p, Instr& ins)
{
    if (ins.n_int != 2 || ins.n_dbl != 1 || !check_dense(p, p.out(ins, 0), p.imm(ins, 0), p.imm(ins, 1))) {
        return FC_ERR_PROGRAM;
    }
    return FC_OK;
}

int execute_fill(RunContext& ctx, const Instr& ins)
{
    const Program& p = ctx.prog;
    return fc_fill(static_cast<int>(p.imm(ins, 0)), p.imm(ins, 1), p.dbl(ins, 0), cout(ctx, ins, 0));
}

// [elem_bytes, ndim, shape[ndim], src_strides[ndim], dst_strides[ndim]]
int validate_copy_strided(Program& p, Instr& ins)
{
    if (ins.n_int < 2) {
        return FC_ERR_PROGRAM;
    }
    const int64_t eb = p.imm(ins, 0), nd = p.imm(ins, 1);
    if (eb < 1 || eb > std::numeric_limits<int>::max() || !shape_layout(ins, 2, nd, 2)) {
        return FC_ERR_PROGRAM;
    }
    const int64_t* shape = p.imms(ins) + 2;
    const int64_t* dst = shape + 2 * nd;
    // No two indices may land on one destination element.
    for (int64_t d = 0; d < nd; ++d) {
        if (dst[d] == 0 && shape[d] > 1) {
            return FC_ERR_PROGRAM;
        }
    }
    if (!check_strided(p, p.in(ins, 0), eb, nd, shape, shape + nd) || !check_strided(p, p.out(ins, 0), eb, nd, shape, dst)) {
        return FC_ERR_PROGRAM;
    }
    return FC_OK;
}

int execute_copy_strided(RunContext& ctx, const Instr& ins)
{
    const Program& p = ctx.prog;
    const int64_t nd = p.imm(ins, 1);
    const int64_t* shape = p.imms(ins) + 2;
    return fc_copy_strided(static_cast<int>(p.imm(ins, 0)), static_cast<int>(nd), shape, cin(ctx, ins, 0), shape + nd,
                           cout(ctx, ins, 0), shape + 2 * nd);
}

// ---------------------------------------------------------------- UNARY, CAST
int validate_unary(Program& p, Instr& ins)
{
    if (ins.n_int != 3 || ins.n_dbl != 0) {
        return FC_ERR_PROGRAM;
    }
    const int64_t dt = p.imm(ins, 0), op = p.imm(ins, 1), n = p.imm(ins, 2);
    if (op < 0 || op >= FC_UNARY_COUNT) {
        return FC_ERR_OP;
    }
    if (!check_dense(p, p.in(ins, 0), dt, n) || !check_dense(p, p.out(ins, 0), dt, n)) {
        return FC_ERR_PROGRAM;
    }
    return FC_OK;
}

int execute_unary(RunContext& ctx, const Instr& ins)
{
    const Program& p = ctx.prog;
    return fc_ew_unary(static_cast<int>(p.imm(ins, 0)), static_cast<int>(p.imm(ins, 1)), p.imm(ins, 2), cin(ctx, ins, 0),
                       cout(ctx, ins, 0));
}

int validate_cast(Program& p, Instr& ins)
{
    if (ins.n_int != 3 || ins.n_dbl != 0 || !check_dense(p, p.in(ins, 0), p.imm(ins, 0), p.imm(ins, 2)) ||
        !check_dense(p, p.out(ins, 0), p.imm(ins, 1), p.imm(ins, 2))) {
        return FC_ERR_PROGRAM;
    }
    return FC_OK;
}

int execute_cast(RunContext& ctx, const Instr& ins)
{
    const Program& p = ctx.prog;
    return fc_cast(static_cast<int>(p.imm(ins, 0)), static_cast<int>(p.imm(ins, 1)), p.imm(ins, 2), cin(ctx, ins, 0),
                   cout(ctx, ins, 0));
}

// ---------------------------------------------------------------- BINARY, COMPARE, WHERE
// [dtype, op, ndim, shape[ndim], strides of each input[ndim]...]; the output is contiguous. For
// WHERE there is no op: [dtype, ndim, shape, s_cond, s_a, s_b].
int validate_broadcast(Program& p, Instr& ins, int64_t head, int64_t out_dtype)
{
    const int64_t nd = ins.n_int > head - 1 ? p.imm(ins, head - 1) : -1;
    if (!shape_layout(ins, head, nd, ins.n_in)) {
        return FC_ERR_PROGRAM;
    }
    const int64_t dt = p.imm(ins, 0);
    const int64_t* shape = p.imms(ins) + head;
    int64_t n = 0;
    if (!valid_dtype(dt) || !product(shape, nd, &n)) {
        return FC_ERR_PROGRAM;
    }
    for (int64_t k = 0; k < ins.n_in; ++k) {
        // WHERE's condition (input 0) is bool.
        const int64_t in_dt = ins.op == FC_OPC_WHERE && k == 0 ? int64_t{FC_BOOL} : dt;
        if (!check_strided(p, p.in(ins, k), itemsize(in_dt), nd, shape, shape + nd * (1 + k))) {
            return FC_ERR_PROGRAM;
        }
    }
    return check_dense(p, p.out(ins, 0), out_dtype < 0 ? dt : out_dtype, n) ? FC_OK : FC_ERR_PROGRAM;
}

int validate_binary(Program& p, Instr& ins)
{
    if (ins.n_int >= 2 && (p.imm(ins, 1) < 0 || p.imm(ins, 1) >= FC_BINARY_COUNT)) {
        return FC_ERR_OP;
    }
    return validate_broadcast(p, ins, 3, -1);
}

int validate_compare(Program& p, Instr& ins)
{
    if (ins.n_int >= 2 && (p.imm(ins, 1) < 0 || p.imm(ins, 1) >= FC_CMP_COUNT)) {
        return FC_ERR_OP;
    }
    return validate_broadcast(p, ins, 3, FC_BOOL);
}

int validate_where(Program& p, Instr& ins) { return validate_broadcast(p, ins, 2, -1); }

int execute_binary(RunContext& ctx, const Instr& ins)
{
    const Program& p = ctx.prog;
    const int64_t nd = p.imm(ins, 2);
    const int64_t* shape = p.imms(ins) + 3;
    return fc_ew_binary(static_cast<int>(p.imm(ins, 0)), static_cast<int>(p.imm(ins, 1)), static_cast<int>(nd), shape,
                        cin(ctx, ins, 0), shape + nd, cin(ctx, ins, 1), shape + 2 * nd, cout(ctx, ins, 0));
}

int execute_compare(RunContext& ctx, const Instr& ins)
{
    const Program& p = ctx.prog;
    const int64_t nd = p.imm(ins, 2);
    const int64_t* shape = p.imms(ins) + 3;
    return fc_ew_compare(static_cast<int>(p.imm(ins, 0)), static_cast<int>(p.imm(ins, 1)), static_cast<int>(nd), shape,
                         cin(ctx, ins, 0), shape + nd, cin(ctx, ins, 1), shape + 2 * nd, cout(ctx, ins, 0));
}

int execute_where(RunContext& ctx, const Instr& ins)
{
    const Program& p = ctx.prog;
    const int64_t nd = p.imm(ins, 1);
    const int64_t* shape = p.imms(ins) + 2;
    return fc_ew_where(static_cast<int>(p.imm(ins, 0)), static_cast<int>(nd), shape, cin(ctx, ins, 0), shape + nd,
                       cin(ctx, ins, 1), shape + 2 * nd, cin(ctx, ins, 2), shape + 3 * nd, cout(ctx, ins, 0));
}

// ---------------------------------------------------------------- GEMM
// a, b [, bias] [, s] -> c  [dtype, trans_a, trans_b, batch, m, n, k, lda, stride_a, ldb, stride_b,
// ldc, stride_c, act] [{alpha, beta} with s]: c_i = act(op(a_i) @ op(b_i) + bias), alpha 1, beta 0
// (scaled: alpha * s, beta). With a bias or an act, or a pre-packed operand (trans FC_GEMM_PACKED:
// written by a GEMM_PACK instruction), fc_*gemm_packed runs once per batch element.
enum { G_DT, G_TA, G_TB, G_BATCH, G_M, G_N, G_K, G_LDA, G_SA, G_LDB, G_SB, G_LDC, G_SC, G_ACT, G_COUNT };

// The bytes of a packed operand (fc_gemm_packed_bytes), or -1 when it has none.
int64_t packed_bytes(int64_t dt, int operand, int64_t rows, int64_t cols)
{
    int64_t bytes = 0;
    return fc_gemm_packed_bytes(static_cast<int>(dt), operand, rows, cols, &bytes) == FC_OK ? bytes : -1;
}

// A packed operand of `bytes` bytes read by every batch element (stride 0): its buffer holds them,
// aligned for the dtype.
bool check_packed(Program& p, int64_t buffer, int64_t dt, int64_t bytes, int64_t batch, int64_t stride)
{
    return bytes > 0 && (stride == 0 || batch <= 1) && check_dense(p, buffer, dt, bytes / itemsize(dt));
}

// The elements of one (stored rows x cols, leading dimension ld) matrix per batch element.
bool check_matrix(Program& p, int64_t buffer, int64_t dt, int64_t batch, int64_t stride, int64_t rows,
                  int64_t cols, int64_t ld)
{
    if (ld < (cols > 1 ? cols : 1)) {
        return false;
    }
    const int64_t shape[3] = {batch, rows, cols};
    const int64_t strides[3] = {stride, ld, 1};
    return check_strided(p, buffer, itemsize(dt), 3, shape, strides);
}

// The scaled form: two doubles {alpha, beta} and one more input, last, holding one element s of
// the dtype: c = alpha * s * op(a) @ op(b) + beta * c (an SGD step W - lr * x^T g with c = W,
// alpha -1, beta 1 and s = lr, read at run time).
bool gemm_scaled(const Instr& ins)
{
    return ins.n_dbl == 2;
}

bool gemm_has_bias(const Instr& ins)
{
    return ins.n_in == (gemm_scaled(ins) ? 4 : 3);
}

int validate_gemm(Program& p, Instr& ins)
{
    if (ins.n_int != G_COUNT || (ins.n_dbl != 0 && ins.n_dbl != 2) || (ins.n_dbl == 0 && ins.n_in > 3) ||
        (gemm_scaled(ins) && ins.n_in < 3)) {
        return FC_ERR_PROGRAM;
    }
    const int64_t* g = p.imms(ins);
    const int64_t dt = g[G_DT], m = g[G_M], n = g[G_N], k = g[G_K], batch = g[G_BATCH];
    const auto trans_ok = [](int64_t t) { return t == 0 || t == 1 || t == FC_GEMM_PACKED; };
    if (!is_float(dt) || !trans_ok(g[G_TA]) || !trans_ok(g[G_TB]) || batch < 0 || m < 0 || n < 0 || k < 0) {
        return FC_ERR_PROGRAM;
    }
    if (g[G_ACT] < 0 || g[G_ACT] >= FC_ACT_COUNT) {
        return FC_ERR_OP;
    }
    const bool ta = g[G_TA] == 1, tb = g[G_TB] == 1;
    const bool pa = g[G_TA] == FC_GEMM_PACKED, pb = g[G_TB] == FC_GEMM_PACKED;
    const bool a_ok = pa ? check_packed(p, p.in(ins, 0), dt, packed_bytes(dt, FC_GEMM_OPERAND_A, m, k), batch, g[G_SA])
                         : check_matrix(p, p.in(ins, 0), dt, batch, g[G_SA], ta ? k : m, ta ? m : k, g[G_LDA]);
    const bool b_ok = pb ? check_packed(p, p.in(ins, 1), dt, packed_bytes(dt, FC_GEMM_OPERAND_B, k, n), batch, g[G_SB])
                         : check_matrix(p, p.in(ins, 1), dt, batch, g[G_SB], tb ? n : k, tb ? k : n, g[G_LDB]);
    if (!a_ok || !b_ok || !check_matrix(p, p.out(ins, 0), dt, batch, g[G_SC], m, n, g[G_LDC])) {
        return FC_ERR_PROGRAM;
    }
    // The C matrices of a batch must not overlap.
    int64_t c_extent = 0;
    if (batch > 1 && m > 0 && n > 0 && (!mul_ok(m - 1, g[G_LDC], &c_extent) || g[G_SC] < c_extent + n)) {
        return FC_ERR_PROGRAM;
    }
    if (gemm_has_bias(ins) && !check_dense(p, p.in(ins, 2), dt, n)) {
        return FC_ERR_PROGRAM;
    }
    if (gemm_scaled(ins) && !check_dense(p, p.in(ins, ins.n_in - 1), dt, 1)) {
        return FC_ERR_PROGRAM;
    }
    return FC_OK;
}

template <typename T>
int gemm_typed(const RunContext& ctx, const Instr& ins)
{
    const int64_t* g = ctx.prog.imms(ins);
    const int ta = static_cast<int>(g[G_TA]), tb = static_cast<int>(g[G_TB]);
    const auto* a = static_cast<const T*>(cin(ctx, ins, 0));
    const auto* b = static_cast<const T*>(cin(ctx, ins, 1));
    auto* c = static_cast<T*>(cout(ctx, ins, 0));
    const T* bias = gemm_has_bias(ins) ? static_cast<const T*>(cin(ctx, ins, 2)) : nullptr;
    const int act = static_cast<int>(g[G_ACT]);
    T alpha = 1, beta = 0;
    if (gemm_scaled(ins)) {
        const double* d = ctx.prog.fimm.data() + ins.dbls;
        alpha = static_cast<T>(d[0] * static_cast<double>(*static_cast<const T*>(cin(ctx, ins, ins.n_in - 1))));
        beta = static_cast<T>(d[1]);
    }
    const bool packed = ta == FC_GEMM_PACKED || tb == FC_GEMM_PACKED;
    if (bias == nullptr && act == FC_ACT_NONE && !packed) {
        if constexpr (sizeof(T) == 4) {
            return fc_sgemm_batched(ta, tb, g[G_BATCH], g[G_M], g[G_N], g[G_K], alpha, a, g[G_LDA], g[G_SA], b,
                                    g[G_LDB], g[G_SB], beta, c, g[G_LDC], g[G_SC]);
        } else {
            return fc_dgemm_batched(ta, tb, g[G_BATCH], g[G_M], g[G_N], g[G_K], alpha, a, g[G_LDA], g[G_SA], b,
                                    g[G_LDB], g[G_SB], beta, c, g[G_LDC], g[G_SC]);
        }
    }
    for (int64_t i = 0; i < g[G_BATCH]; ++i) {
        const T* ai = a + i * g[G_SA];
        const T* bi = b + i * g[G_SB];
        T* ci = c + i * g[G_SC];
        int status;
        if constexpr (sizeof(T) == 4) {
            status = fc_sgemm_packed(ta, tb, g[G_M], g[G_N], g[G_K], alpha, ai, g[G_LDA], bi, g[G_LDB], beta, ci,
                                     g[G_LDC], bias, act);
        } else {
            status = fc_dgemm_packed(ta, tb, g[G_M], g[G_N], g[G_K], alpha, ai, g[G_LDA], bi, g[G_LDB], beta, ci,
                                     g[G_LDC], bias, act);
        }
        if (status != FC_OK) {
            return status;
        }
    }
    return FC_OK;
}

int execute_gemm(RunContext& ctx, const Instr& ins)
{
    return ctx.prog.imm(ins, G_DT) == FC_F32 ? gemm_typed<float>(ctx, ins) : gemm_typed<double>(ctx, ins);
}

// x -> packed  [dtype, operand, trans, rows, cols, ld]: fc_*gemm_pack of op(x) (rows x cols as
// the product reads it; x stored transposed when trans) for the GEMMs that read it as FC_GEMM_PACKED.
enum { P_DT, P_OPERAND, P_TRANS, P_ROWS, P_COLS, P_LD, P_COUNT };

int validate_gemm_pack(Program& p, Instr& ins)
{
    if (ins.n_int != P_COUNT || ins.n_dbl != 0) {
        return FC_ERR_PROGRAM;
    }
    const int64_t* g = p.imms(ins);
    const int64_t dt = g[P_DT], rows = g[P_ROWS], cols = g[P_COLS];
    if (!is_float(dt) || (g[P_OPERAND] != FC_GEMM_OPERAND_A && g[P_OPERAND] != FC_GEMM_OPERAND_B) ||
        (g[P_TRANS] != 0 && g[P_TRANS] != 1) || rows < 0 || cols < 0) {
        return FC_ERR_PROGRAM;
    }
    const bool t = g[P_TRANS] == 1;
    const int64_t bytes = packed_bytes(dt, static_cast<int>(g[P_OPERAND]), rows, cols);
    if (!check_matrix(p, p.in(ins, 0), dt, 1, 0, t ? cols : rows, t ? rows : cols, g[P_LD]) ||
        !check_packed(p, p.out(ins, 0), dt, bytes, 1, 0)) {
        return FC_ERR_PROGRAM;
    }
    ins.aux64 = p.aux64.size();
    p.aux64.push_back(bytes);
    return FC_OK;
}

int execute_gemm_pack(RunContext& ctx, const Instr& ins)
{
    const Program& p = ctx.prog;
    const int64_t* g = p.imms(ins);
    const int operand = static_cast<int>(g[P_OPERAND]), trans = static_cast<int>(g[P_TRANS]);
    const int64_t bytes = p.aux64[ins.aux64];
    if (g[P_DT] == FC_F32) {
        return fc_sgemm_pack(operand, trans, g[P_ROWS], g[P_COLS], static_cast<const float*>(cin(ctx, ins, 0)),
                             g[P_LD], cout(ctx, ins, 0), bytes);
    }
    return fc_dgemm_pack(operand, trans, g[P_ROWS], g[P_COLS], static_cast<const double*>(cin(ctx, ins, 0)),
                         g[P_LD], cout(ctx, ins, 0), bytes);
}

// ---------------------------------------------------------------- REDUCE, SOFTMAX
// [dtype, op, outer, red, inner (, ld: x's rows of inner elements that far apart)]
int validate_reduce(Program& p, Instr& ins)
{
    if ((ins.n_int != 5 && ins.n_int != 6) || ins.n_dbl != 0) {
        return FC_ERR_PROGRAM;
    }
    const int64_t dt = p.imm(ins, 0), op = p.imm(ins, 1), inner = p.imm(ins, 4);
    const int64_t ld = ins.n_int == 6 ? p.imm(ins, 5) : inner;
    if (op < 0 || op >= FC_REDUCE_COUNT) {
        return FC_ERR_OP;
    }
    int64_t n_in = 0, n_out = 0;
    if (!product(p.imms(ins) + 2, 3, &n_in) || !mul_ok(p.imm(ins, 2), inner, &n_out) || ld < inner) {
        return FC_ERR_PROGRAM;
    }
    if (ld != inner && n_in > 0) {  // the rows span (outer * red - 1) * ld + inner elements
        int64_t rows = 0;
        if (!mul_ok(p.imm(ins, 2), p.imm(ins, 3), &rows) || !mul_ok(rows - 1, ld, &n_in) || !add_ok(n_in, inner, &n_in)) {
            return FC_ERR_PROGRAM;
        }
    }
    // A sum of bools counts: int64 result.
    const int64_t out_dt = op == FC_REDUCE_SUM && dt == FC_BOOL ? int64_t{FC_I64} : dt;
    if (!check_dense(p, p.in(ins, 0), dt, n_in) || !check_dense(p, p.out(ins, 0), out_dt, n_out)) {
        return FC_ERR_PROGRAM;
    }
    return FC_OK;
}

int execute_reduce(RunContext& ctx, const Instr& ins)
{
    const int64_t* r = ctx.prog.imms(ins);
    return fc_reduce_ld(static_cast<int>(r[0]), static_cast<int>(r[1]), r[2], r[3], r[4], ins.n_int == 6 ? r[5] : r[4],
                        cin(ctx, ins, 0), cout(ctx, ins, 0));
}

// [dtype, log, rows, cols]
int validate_softmax(Program& p, Instr& ins)
{
    int64_t n = 0;
    if (ins.n_int != 4 || ins.n_dbl != 0 || !is_float(p.imm(ins, 0)) || !mul_ok(p.imm(ins, 2), p.imm(ins, 3), &n) ||
        !check_dense(p, p.in(ins, 0), p.imm(ins, 0), n) || !check_dense(p, p.out(ins, 0), p.imm(ins, 0), n)) {
        return FC_ERR_PROGRAM;
    }
    return FC_OK;
}

int execute_softmax(RunContext& ctx, const Instr& ins)
{
    const int64_t* r = ctx.prog.imms(ins);
    return fc_softmax_rows(static_cast<int>(r[0]), r[1] != 0, r[2], r[3], cin(ctx, ins, 0), cout(ctx, ins, 0));
}

// ---------------------------------------------------------------- GATHER, SCATTER_ADD, ONE_HOT
// gather: table, idx -> out; scatter_add: src, idx -> out. [dtype, n_idx, rows, row_len]
int validate_indexed(Program& p, Instr& ins)
{
    if (ins.n_int != 4 || ins.n_dbl != 0) {
        return FC_ERR_PROGRAM;
    }
    const int64_t dt = p.imm(ins, 0), n_idx = p.imm(ins, 1), rows = p.imm(ins, 2), len = p.imm(ins, 3);
    int64_t table = 0, picked = 0;
    if (!mul_ok(rows, len, &table) || !mul_ok(n_idx, len, &picked) || !check_dense(p, p.in(ins, 1), FC_I64, n_idx)) {
        return FC_ERR_PROGRAM;
    }
    const bool gather = ins.op == FC_OPC_GATHER;
    if (!check_dense(p, p.in(ins, 0), dt, gather ? table : picked) ||
        !check_dense(p, p.out(ins, 0), dt, gather ? picked : table)) {
        return FC_ERR_PROGRAM;
    }
    return FC_OK;
}

int execute_gather(RunContext& ctx, const Instr& ins)
{
    const int64_t* r = ctx.prog.imms(ins);
    return fc_gather(static_cast<int>(r[0]), r[1], static_cast<const int64_t*>(cin(ctx, ins, 1)), r[2], r[3],
                     cin(ctx, ins, 0), cout(ctx, ins, 0));
}

int execute_scatter_add(RunContext& ctx, const Instr& ins)
{
    const int64_t* r = ctx.prog.imms(ins);
    return fc_scatter_add(static_cast<int>(r[0]), r[1], static_cast<const int64_t*>(cin(ctx, ins, 1)), r[2], r[3],
                          cin(ctx, ins, 0), cout(ctx, ins, 0));
}

// labels -> out  [dtype, n, classes]
int validate_one_hot(Program& p, Instr& ins)
{
    int64_t n = 0;
    if (ins.n_int != 3 || ins.n_dbl != 0 || !mul_ok(p.imm(ins, 1), p.imm(ins, 2), &n) ||
        !check_dense(p, p.in(ins, 0), FC_I64, p.imm(ins, 1)) || !check_dense(p, p.out(ins, 0), p.imm(ins, 0), n)) {
        return FC_ERR_PROGRAM;
    }
    return FC_OK;
}

int execute_one_hot(RunContext& ctx, const Instr& ins)
{
    const int64_t* r = ctx.prog.imms(ins);
    return fc_one_hot(static_cast<int>(r[0]), r[1], static_cast<const int64_t*>(cin(ctx, ins, 0)), r[2],
                      cout(ctx, ins, 0));
}

// ---------------------------------------------------------------- UNFOLD, FOLD
// unfold: x -> cols, fold: cols -> x. [dtype, nd, n, c, spatial[nd], kernel[nd], stride[nd],
// pad_lo[nd], pad_hi[nd], dilation[nd]]; unfold has {pad_value}.
int validate_window(Program& p, Instr& ins)
{
    const bool unfold = ins.op == FC_OPC_UNFOLD;
    if (ins.n_int < 2 || ins.n_dbl != (unfold ? 1 : 0)) {
        return FC_ERR_PROGRAM;
    }
    const int64_t dt = p.imm(ins, 0), nd = p.imm(ins, 1);
    if ((nd != 1 && nd != 2) || ins.n_int != 4 + 6 * nd) {
        return FC_ERR_PROGRAM;
    }
    const int64_t* r = p.imms(ins);
    const int64_t *spatial = r + 4, *kernel = spatial + nd, *stride = kernel + nd, *lo = stride + nd, *hi = lo + nd,
                  *dil = hi + nd;
    int64_t image = 0, cols = 0;
    if (!mul_ok(r[2], r[3], &image)) {
        return FC_ERR_PROGRAM;
    }
    cols = image;
    for (int64_t d = 0; d < nd; ++d) {
        int64_t span = 0, padded = 0, out = 0;
        if (kernel[d] < 1 || stride[d] < 1 || dil[d] < 1 || !mul_ok(dil[d], kernel[d] - 1, &span) ||
            !add_ok(spatial[d], lo[d], &padded) || !add_ok(padded, hi[d], &padded) || padded < span + 1) {
            return FC_ERR_PROGRAM;
        }
        out = (padded - span - 1) / stride[d] + 1;
        if (!mul_ok(image, spatial[d], &image) || !mul_ok(cols, out, &cols) || !mul_ok(cols, kernel[d], &cols)) {
            return FC_ERR_PROGRAM;
        }
    }
    const int64_t x = unfold ? p.in(ins, 0) : p.out(ins, 0);
    const int64_t c = unfold ? p.out(ins, 0) : p.in(ins, 0);
    if (!valid_dtype(dt) || !check_dense(p, x, dt, image) || !check_dense(p, c, dt, cols)) {
        return FC_ERR_PROGRAM;
    }
    return FC_OK;
}

int execute_unfold(RunContext& ctx, const Instr& ins)
{
    const int64_t* r = ctx.prog.imms(ins);
    const int64_t nd = r[1];
    const int64_t* s = r + 4;
    return fc_unfold(static_cast<int>(r[0]), static_cast<int>(nd), r[2], r[3], s, s + nd, s + 2 * nd, s + 3 * nd,
                     s + 4 * nd, s + 5 * nd, ctx.prog.dbl(ins, 0), cin(ctx, ins, 0), cout(ctx, ins, 0));
}

int execute_fold(RunContext& ctx, const Instr& ins)
{
    const int64_t* r = ctx.prog.imms(ins);
    const int64_t nd = r[1];
    const int64_t* s = r + 4;
    return fc_fold(static_cast<int>(r[0]), static_cast<int>(nd), r[2], r[3], s, s + nd, s + 2 * nd, s + 3 * nd,
                   s + 4 * nd, s + 5 * nd, cin(ctx, ins, 0), cout(ctx, ins, 0));
}

// ---------------------------------------------------------------- FUSED_EW
// inputs... -> out  [dtype, n, cols, n_instr, mode of each input, 4 * n_instr code words, the row
// stride of each STRIDED input, optionally out's row stride] {constants}. The code is converted to int32 and the input lengths
// derived once, here.
int validate_fused(Program& p, Instr& ins)
{
    if (ins.n_int < 4 || ins.n_in > FC_FUSED_MAX_INPUTS) {
        return FC_ERR_PROGRAM;
    }
    const int64_t dt = p.imm(ins, 0), n = p.imm(ins, 1), cols = p.imm(ins, 2), n_instr = p.imm(ins, 3);
    int64_t n_strided = 0;
    for (int64_t j = 0; j < ins.n_in && 4 + j < ins.n_int; ++j) {
        n_strided += p.imm(ins, 4 + j) == FC_IN_STRIDED;
    }
    // One more immediate after the strided inputs' row strides: the output's row stride.
    const int64_t base = 4 + ins.n_in + 4 * n_instr + n_strided;
    if (!is_float(dt) || n < 0 || n_instr < 1 || n_instr > FC_FUSED_MAX_INSTR ||
        (ins.n_int != base && ins.n_int != base + 1) ||
        !fits_int(ins.n_dbl) || (n > 0 && (cols < 1 || n % cols != 0))) {
        return FC_ERR_PROGRAM;
    }
    int64_t out_span = n;
    if (ins.n_int == base + 1 && n > 0) {
        const int64_t ld = p.imm(ins, base);
        if (ld < cols || !mul_ok(n / cols - 1, ld, &out_span) || !add_ok(out_span, cols, &out_span)) {
            return FC_ERR_PROGRAM;
        }
    }
    // aux32: the input modes, then the code as int32; aux64: the input lengths.
    ins.aux32 = p.aux32.size();
    ins.aux64 = p.aux64.size();
    int64_t strided_seen = 0;
    for (int64_t j = 0; j < ins.n_in; ++j) {
        const int64_t mode = p.imm(ins, 4 + j);
        int64_t len = 0;
        switch (mode) {
        case FC_IN_FULL:
            len = n;
            break;
        case FC_IN_SCALAR:
            len = 1;
            break;
        case FC_IN_ROW:
            len = n > 0 ? cols : 0;
            break;
        case FC_IN_COL:
            len = n > 0 ? n / cols : 0;
            break;
        case FC_IN_STRIDED: {
            // The kernel's length for this mode is the row stride; the rows span (rows-1)*ld + cols.
            const int64_t ld = p.imm(ins, 4 + ins.n_in + 4 * n_instr + strided_seen++);
            int64_t span = 0;
            if (ld < cols || (n > 0 && (!mul_ok(n / cols - 1, ld, &span) || !add_ok(span, cols, &span)))) {
                return FC_ERR_PROGRAM;
            }
            if (!check_dense(p, p.in(ins, j), dt, span)) {
                return FC_ERR_PROGRAM;
            }
            p.aux32.push_back(static_cast<int32_t>(mode));
            p.aux64.push_back(ld);
            continue;
        }
        default:
            return FC_ERR_OP;
        }
        if (!check_dense(p, p.in(ins, j), dt, len)) {
            return FC_ERR_PROGRAM;
        }
        p.aux32.push_back(static_cast<int32_t>(mode));
        p.aux64.push_back(len);
    }
    const int64_t* code = p.imms(ins) + 4 + ins.n_in;
    for (int64_t k = 0; k < n_instr; ++k) {
        const int64_t op = code[4 * k], regs = ins.n_in + k;
        if (op < 0 || op >= FC_EW_CODE_COUNT) {
            return FC_ERR_OP;
        }
        // Operands an opcode reads: unary a; binary and comparisons a, b; WHERE a, b, c; CONST a
        // indexes the constants.
        const int used = op <= FC_EW_RELU ? 1 : op <= FC_EW_NE ? 2 : op == FC_EW_WHERE ? 3 : 0;
        for (int f = 1; f <= 3; ++f) {
            const int64_t v = code[4 * k + f];
            const bool ok = f <= used ? v >= 0 && v < regs : op == FC_EW_CONST && f == 1 ? v >= 0 && v < ins.n_dbl : v == 0;
            if (!ok) {
                return FC_ERR_PROGRAM;
            }
        }
        for (int f = 0; f < 4; ++f) {
            p.aux32.push_back(static_cast<int32_t>(code[4 * k + f]));
        }
    }
    p.aux64.push_back(ins.n_int == base + 1 ? p.imm(ins, base) : cols);  // after the lengths: out's row stride
    return check_dense(p, p.out(ins, 0), dt, out_span) ? FC_OK : FC_ERR_PROGRAM;
}

int execute_fused(RunContext& ctx, const Instr& ins)
{
    Program& p = ctx.prog;
    const void* inputs[FC_FUSED_MAX_INPUTS];
    for (int64_t j = 0; j < ins.n_in; ++j) {
        inputs[j] = cin(ctx, ins, j);
    }
    const int32_t* modes = p.aux32.data() + ins.aux32;
    const int32_t* code = modes + ins.n_in;
    const int64_t* lens = p.aux64.data() + ins.aux64;
    const int64_t* r = p.imms(ins);
    const int64_t out_ld = lens[ins.n_in];
    return fc_fused_ew_ld(static_cast<int>(r[0]), static_cast<int>(ins.n_in), inputs, modes, lens, r[1], r[2],
                          static_cast<int>(r[3]), code, static_cast<int>(ins.n_dbl), p.fimm.data() + ins.dbls,
                          cout(ctx, ins, 0), out_ld);
}

// ---------------------------------------------------------------- PHILOX
// seed -> y  [dtype, salt, n]
int validate_philox(Program& p, Instr& ins)
{
    if (ins.n_int != 3 || ins.n_dbl != 0 || !is_float(p.imm(ins, 0)) || !check_dense(p, p.in(ins, 0), FC_I64, 1) ||
        !check_dense(p, p.out(ins, 0), p.imm(ins, 0), p.imm(ins, 2))) {
        return FC_ERR_PROGRAM;
    }
    return FC_OK;
}

int execute_philox(RunContext& ctx, const Instr& ins)
{
    const Program& p = ctx.prog;
    const int64_t seed = *static_cast<const int64_t*>(cin(ctx, ins, 0));
    if (seed < 0) {
        return FC_ERR_SIZE;  // the stream is keyed by an unsigned 64-bit seed, as in the reference
    }
    // The salt is an unsigned 64-bit key word carried in an int64 immediate (two's complement).
    const auto salt = static_cast<uint64_t>(p.imm(ins, 1));
    const int64_t n = p.imm(ins, 2);
    if (p.imm(ins, 0) == FC_F32) {
        return fc_philox_uniform_f32(static_cast<uint64_t>(seed), salt, 0, static_cast<float*>(cout(ctx, ins, 0)), n);
    }
    return fc_philox_uniform_f64(static_cast<uint64_t>(seed), salt, 0, static_cast<double*>(cout(ctx, ins, 0)), n);
}

// ---------------------------------------------------------------- CONV
// a, b[, bias] -> out, scratch  [dtype, mode, n, c, o, groups, slots, h, w, kh, kw, sh, sw, ph_lo, pw_lo,
// ph_hi, pw_hi, dh, dw[, act]]
enum { CV_DT = 0, CV_MODE = 1, CV_SLOTS = 6, CV_COUNT = 19 };

fc_conv_geom conv_geom(const int64_t* r)
{
    return fc_conv_geom{r[2], r[3], r[4], r[5], r[7], r[8], r[9], r[10], r[11], r[12], r[13], r[14], r[15], r[16],
                        r[17], r[18]};
}

int validate_conv(Program& p, Instr& ins)
{
    // A biased forward has a third input and one more immediate, its fc_act.
    if (ins.n_int != CV_COUNT + (ins.n_in == 3 ? 1 : 0) || ins.n_dbl != 0) {
        return FC_ERR_PROGRAM;
    }
    const int64_t* r = p.imms(ins);
    const fc_conv_geom g = conv_geom(r);
    if (ins.n_in == 3 && r[CV_COUNT] != FC_ACT_NONE && r[CV_COUNT] != FC_ACT_RELU) {
        return FC_ERR_PROGRAM;
    }
    int64_t na = 0, nb = 0, nout = 0, scratch = 0;
    if (r[CV_DT] != FC_F32 && r[CV_DT] != FC_F64) {
        return FC_ERR_PROGRAM;
    }
    if (fc_conv_sizes(static_cast<int>(r[CV_DT]), static_cast<int>(r[CV_MODE]), &g, r[CV_SLOTS], &na, &nb, &nout,
                      &scratch) != FC_OK) {
        return FC_ERR_PROGRAM;
    }
    // The third input is the forward's bias (one value per output channel).
    if (ins.n_in == 3 && (r[CV_MODE] != FC_CONV_FORWARD || !check_dense(p, p.in(ins, 2), r[CV_DT], g.o))) {
        return FC_ERR_PROGRAM;
    }
    if (!check_dense(p, p.in(ins, 0), r[CV_DT], na) || !check_dense(p, p.in(ins, 1), r[CV_DT], nb) ||
        !check_dense(p, p.out(ins, 0), r[CV_DT], nout) || !check_bytes(p, p.out(ins, 1), scratch)) {
        return FC_ERR_PROGRAM;
    }
    if (scratch > 0) {
        check_dense(p, p.out(ins, 1), r[CV_DT], scratch / itemsize(r[CV_DT]));
    }
    return FC_OK;
}

int execute_conv(RunContext& ctx, const Instr& ins)
{
    const int64_t* r = ctx.prog.imms(ins);
    const fc_conv_geom g = conv_geom(r);
    return fc_conv_ex(static_cast<int>(r[CV_DT]), static_cast<int>(r[CV_MODE]), &g, r[CV_SLOTS], cin(ctx, ins, 0),
                      cin(ctx, ins, 1), ins.n_in == 3 ? cin(ctx, ins, 2) : nullptr,
                      ins.n_in == 3 ? static_cast<int>(r[CV_COUNT]) : FC_ACT_NONE, cout(ctx, ins, 0),
                      cout(ctx, ins, 1));
}

// ---------------------------------------------------------------- POOL
// ins -> out  [dtype, mode, n, c, h, w, kh, kw, sh, sw, ph_lo, pw_lo, ph_hi, pw_hi]; see fc_pool_mode
fc_pool_geom pool_geom(const int64_t* r)
{
    return fc_pool_geom{r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11], r[12], r[13]};
}

int validate_pool(Program& p, Instr& ins)
{
    if (ins.n_int != 14 || ins.n_dbl != 0) {
        return FC_ERR_PROGRAM;
    }
    const int64_t* r = p.imms(ins);
    const int64_t dt = r[0], mode = r[1];
    // Per mode: the inputs, and whether the first input / the output is image-shaped.
    static const int64_t kIns[FC_POOL_MODE_COUNT] = {1, 2, 3, 1, 1, 3, 3};
    static const bool kInImage[FC_POOL_MODE_COUNT] = {true, true, true, true, false, true, true};
    static const bool kOutImage[FC_POOL_MODE_COUNT] = {false, false, true, false, true, true, true};
    if ((dt != FC_F32 && dt != FC_F64) || mode < 0 || mode >= FC_POOL_MODE_COUNT || ins.n_in != kIns[mode]) {
        return FC_ERR_PROGRAM;
    }
    const fc_pool_geom g = pool_geom(r);
    int64_t image = 0, out = 0;
    if (fc_pool_sizes(&g, &image, &out) != FC_OK) {
        return FC_ERR_PROGRAM;
    }
    bool ok = check_dense(p, p.in(ins, 0), dt, kInImage[mode] ? image : out) &&
              check_dense(p, p.out(ins, 0), dt, kOutImage[mode] ? image : out);
    for (int64_t i = 1; i < ins.n_in; ++i) {
        ok = ok && check_dense(p, p.in(ins, i), dt, out);
    }
    return ok ? FC_OK : FC_ERR_PROGRAM;
}

int execute_pool(RunContext& ctx, const Instr& ins)
{
    const int64_t* r = ctx.prog.imms(ins);
    const fc_pool_geom g = pool_geom(r);
    const void* b = ins.n_in > 1 ? cin(ctx, ins, 1) : nullptr;
    const void* c = ins.n_in > 2 ? cin(ctx, ins, 2) : nullptr;
    return fc_pool(static_cast<int>(r[0]), static_cast<int>(r[1]), &g, cin(ctx, ins, 0), b, c, cout(ctx, ins, 0));
}

// ---------------------------------------------------------------- LSTM_CELL
// [dtype, mode, n, h, lda, ldb, flags, order[4]]; see FC_OPC_LSTM_CELL
enum { LS_DT = 0, LS_MODE, LS_N, LS_H, LS_LDA, LS_LDB, LS_FLAGS, LS_ORDER, LS_COUNT = LS_ORDER + 4 };

bool lstm_rows(Program& p, int64_t buffer, int64_t dt, int64_t n, int64_t h, int64_t ld)
{
    const int64_t shape[2] = {n, 4 * h}, strides[2] = {ld, 1};
    return ld >= 4 * h && check_strided(p, buffer, itemsize(dt), 2, shape, strides);
}

int validate_lstm(Program& p, Instr& ins)
{
    if (ins.n_int != LS_COUNT || ins.n_dbl != 0) {
        return FC_ERR_PROGRAM;
    }
    const int64_t* r = p.imms(ins);
    const int64_t dt = r[LS_DT], n = r[LS_N], h = r[LS_H], flags = r[LS_FLAGS];
    int64_t nh = 0, h4 = 0;
    if (!is_float(dt) || n < 0 || h < 0 || !mul_ok(h, 7, &h4) || !mul_ok(n, h4, &nh) || flags < 0 || flags > 3) {
        return FC_ERR_PROGRAM;
    }
    nh = n * h;
    int seen = 0;
    for (int k = 0; k < 4; ++k) {
        const int64_t b = r[LS_ORDER + k];
        if (b < 0 || b > 3 || (seen & (1 << b))) {
            return FC_ERR_PROGRAM;
        }
        seen |= 1 << b;
    }
    if (r[LS_MODE] == 0) {
        const bool has_b = flags & 1, has_bias = flags & 2;
        if (ins.n_in != 2 + has_b + has_bias || ins.n_out != 1) {
            return FC_ERR_PROGRAM;
        }
        bool ok = lstm_rows(p, p.in(ins, 0), dt, n, h, r[LS_LDA]);
        if (has_b) {
            ok = ok && lstm_rows(p, p.in(ins, 1), dt, n, h, r[LS_LDB]);
        }
        if (has_bias) {
            ok = ok && check_dense(p, p.in(ins, 1 + has_b), dt, 4 * h);
        }
        ok = ok && check_dense(p, p.in(ins, ins.n_in - 1), dt, nh) && check_dense(p, p.out(ins, 0), dt, 7 * nh);
        return ok ? FC_OK : FC_ERR_PROGRAM;
    }
    if (r[LS_MODE] == 1) {
        const bool has_dc = flags & 1;
        if ((flags & 2) || ins.n_in != 3 + has_dc || ins.n_out != 1) {
            return FC_ERR_PROGRAM;
        }
        bool ok = check_dense(p, p.in(ins, 0), dt, 7 * nh);
        for (int64_t k = 1; k < ins.n_in; ++k) {
            ok = ok && check_dense(p, p.in(ins, k), dt, nh);
        }
        ok = ok && check_dense(p, p.out(ins, 0), dt, 5 * nh);
        return ok ? FC_OK : FC_ERR_PROGRAM;
    }
    return FC_ERR_PROGRAM;
}

template <typename T>
int run_lstm(RunContext& ctx, const Instr& ins, const int64_t* r)
{
    const int64_t n = r[LS_N], h = r[LS_H], flags = r[LS_FLAGS];
    auto in = [&](int64_t k) { return static_cast<const T*>(cin(ctx, ins, k)); };
    T* out = static_cast<T*>(cout(ctx, ins, 0));
    const int64_t* order = r + LS_ORDER;
    if (r[LS_MODE] == 0) {
        const bool has_b = flags & 1, has_bias = flags & 2;
        const T* b = has_b ? in(1) : nullptr;
        const T* bias = has_bias ? in(1 + has_b) : nullptr;
        if constexpr (sizeof(T) == 4) {
            return fc_lstm_cell_fwd_f32(n, h, in(0), r[LS_LDA], b, r[LS_LDB], bias, in(ins.n_in - 1), order, out);
        } else {
            return fc_lstm_cell_fwd_f64(n, h, in(0), r[LS_LDA], b, r[LS_LDB], bias, in(ins.n_in - 1), order, out);
        }
    }
    const T* dc = (flags & 1) ? in(3) : nullptr;
    if constexpr (sizeof(T) == 4) {
        return fc_lstm_cell_bwd_f32(n, h, in(0), in(1), in(2), dc, order, out, out + 4 * n * h);
    } else {
        return fc_lstm_cell_bwd_f64(n, h, in(0), in(1), in(2), dc, order, out, out + 4 * n * h);
    }
}

int execute_lstm(RunContext& ctx, const Instr& ins)
{
    const int64_t* r = ctx.prog.imms(ins);
    return r[LS_DT] == FC_F32 ? run_lstm<float>(ctx, ins, r) : run_lstm<double>(ctx, ins, r);
}

// ---------------------------------------------------------------- GRU_CELL
// [dtype, mode, n, h, ldx, ldh, flags, xorder[3], horder[3]]; see FC_OPC_GRU_CELL
enum { GR_DT = 0, GR_MODE, GR_N, GR_H, GR_LDX, GR_LDH, GR_FLAGS, GR_XORDER, GR_HORDER = GR_XORDER + 3,
       GR_COUNT = GR_HORDER + 3 };

bool gru_rows(Program& p, int64_t buffer, int64_t dt, int64_t n, int64_t h, int64_t ld)
{
    const int64_t shape[2] = {n, 3 * h}, strides[2] = {ld, 1};
    return ld >= 3 * h && check_strided(p, buffer, itemsize(dt), 2, shape, strides);
}

bool permutation3(const int64_t* o)
{
    int seen = 0;
    for (int k = 0; k < 3; ++k) {
        if (o[k] < 0 || o[k] > 2 || (seen & (1 << o[k]))) {
            return false;
        }
        seen |= 1 << o[k];
    }
    return true;
}

int validate_gru(Program& p, Instr& ins)
{
    if (ins.n_int != GR_COUNT || ins.n_dbl != 0 || ins.n_out != 1) {
        return FC_ERR_PROGRAM;
    }
    const int64_t* r = p.imms(ins);
    const int64_t dt = r[GR_DT], n = r[GR_N], h = r[GR_H], flags = r[GR_FLAGS];
    int64_t h7 = 0, all = 0;
    if (!is_float(dt) || n < 0 || h < 0 || !mul_ok(h, 7, &h7) || !mul_ok(n, h7, &all) || flags < 0 || flags > 1 ||
        !permutation3(r + GR_XORDER) || !permutation3(r + GR_HORDER)) {
        return FC_ERR_PROGRAM;
    }
    const int64_t nh = n * h;
    if (r[GR_MODE] == 0) {
        const bool has_h = flags & 1;
        if (ins.n_in != 3 + has_h) {
            return FC_ERR_PROGRAM;
        }
        bool ok = gru_rows(p, p.in(ins, 0), dt, n, h, r[GR_LDX]);
        if (has_h) {
            ok = ok && gru_rows(p, p.in(ins, 1), dt, n, h, r[GR_LDH]);
        }
        ok = ok && check_dense(p, p.in(ins, 1 + has_h), dt, 4 * h) && check_dense(p, p.in(ins, 2 + has_h), dt, nh) &&
             check_dense(p, p.out(ins, 0), dt, 5 * nh);
        return ok ? FC_OK : FC_ERR_PROGRAM;
    }
    if (r[GR_MODE] == 1) {
        if (flags != 0 || ins.n_in != 3) {
            return FC_ERR_PROGRAM;
        }
        const bool ok = check_dense(p, p.in(ins, 0), dt, 5 * nh) && check_dense(p, p.in(ins, 1), dt, nh) &&
                        check_dense(p, p.in(ins, 2), dt, nh) && check_dense(p, p.out(ins, 0), dt, 7 * nh);
        return ok ? FC_OK : FC_ERR_PROGRAM;
    }
    return FC_ERR_PROGRAM;
}

template <typename T>
int run_gru(RunContext& ctx, const Instr& ins, const int64_t* r)
{
    const int64_t n = r[GR_N], h = r[GR_H];
    auto in = [&](int64_t k) { return static_cast<const T*>(cin(ctx, ins, k)); };
    T* out = static_cast<T*>(cout(ctx, ins, 0));
    const int64_t *xo = r + GR_XORDER, *ho = r + GR_HORDER;
    if (r[GR_MODE] == 0) {
        const bool has_h = r[GR_FLAGS] & 1;
        const T* hh = has_h ? in(1) : nullptr;
        if constexpr (sizeof(T) == 4) {
            return fc_gru_cell_fwd_f32(n, h, in(0), r[GR_LDX], hh, r[GR_LDH], in(1 + has_h), in(2 + has_h), xo, ho, out);
        } else {
            return fc_gru_cell_fwd_f64(n, h, in(0), r[GR_LDX], hh, r[GR_LDH], in(1 + has_h), in(2 + has_h), xo, ho, out);
        }
    }
    const int64_t nh3 = 3 * n * h;
    if constexpr (sizeof(T) == 4) {
        return fc_gru_cell_bwd_f32(n, h, in(0), in(1), in(2), xo, ho, out, out + nh3, out + 2 * nh3);
    } else {
        return fc_gru_cell_bwd_f64(n, h, in(0), in(1), in(2), xo, ho, out, out + nh3, out + 2 * nh3);
    }
}

int execute_gru(RunContext& ctx, const Instr& ins)
{
    const int64_t* r = ctx.prog.imms(ins);
    return r[GR_DT] == FC_F32 ? run_gru<float>(ctx, ins, r) : run_gru<double>(ctx, ins, r);
}

// Indexed by fc_opcode: name, inputs min/max, outputs min/max, validate, execute.
const OpSpec kOps[FC_OPC_COUNT] = {
    {"callback", 0, -1, 1, -1, validate_callback, execute_callback},
    {"copy", 1, 1, 1, 1, validate_copy, execute_copy},
    {"fill", 0, 0, 1, 1, validate_fill, execute_fill},
    {"copy_strided", 1, 1, 1, 1, validate_copy_strided, execute_copy_strided},
    {"unary", 1, 1, 1, 1, validate_unary, execute_unary},
    {"binary", 2, 2, 1, 1, validate_binary, execute_binary},
    {"compare", 2, 2, 1, 1, validate_compare, execute_compare},
    {"where", 3, 3, 1, 1, validate_where, execute_where},
    {"cast", 1, 1, 1, 1, validate_cast, execute_cast},
    {"gemm", 2, 4, 1, 1, validate_gemm, execute_gemm},
    {"reduce", 1, 1, 1, 1, validate_reduce, execute_reduce},
    {"softmax", 1, 1, 1, 1, validate_softmax, execute_softmax},
    {"gather", 2, 2, 1, 1, validate_indexed, execute_gather},
    {"scatter_add", 2, 2, 1, 1, validate_indexed, execute_scatter_add},
    {"one_hot", 1, 1, 1, 1, validate_one_hot, execute_one_hot},
    {"unfold", 1, 1, 1, 1, validate_window, execute_unfold},
    {"fold", 1, 1, 1, 1, validate_window, execute_fold},
    {"fused_ew", 0, FC_FUSED_MAX_INPUTS, 1, 1, validate_fused, execute_fused},
    {"philox", 1, 1, 1, 1, validate_philox, execute_philox},
    {"conv", 2, 3, 2, 2, validate_conv, execute_conv},
    {"pool", 1, 3, 1, 1, validate_pool, execute_pool},
    {"lstm_cell", 2, 4, 1, 1, validate_lstm, execute_lstm},
    {"gru_cell", 3, 4, 1, 1, validate_gru, execute_gru},
    {"gemm_pack", 1, 1, 1, 1, validate_gemm_pack, execute_gemm_pack},
};

}  // namespace

const OpSpec* op_spec(int64_t opcode)
{
    return opcode >= 0 && opcode < FC_OPC_COUNT && kOps[opcode].name != nullptr ? &kOps[opcode] : nullptr;
}

}  // namespace fcx
