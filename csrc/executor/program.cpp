// The executor's C ABI: program creation (decode + validate once), the run loop, destruction.
//
// Everything a run could do wrong is decided at creation: buffer ids, operand counts, op codes and
// the byte extent of every access are checked here, so the run loop only resolves pointers (and
// checks what only a run can know: the caller's pointers) and calls kernels.
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>
#include <stdexcept>

#include "program.hpp"

namespace fcx {

namespace {

constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
constexpr int64_t kArenaAlign = 64;

// Pointer of zero-byte buffers: kernels get a valid, aligned address they never read.
alignas(64) unsigned char g_empty[64];

int decode_buffers(Program& p, const int64_t* spec, int64_t n)
{
    p.buffers.resize(static_cast<std::size_t>(n));
    // Each input, parameter and output index belongs to at most one buffer: two buffers on one
    // output would write the same memory behind the overlap checks' back.
    std::vector<char> seen_in(static_cast<std::size_t>(p.n_inputs), 0);
    std::vector<char> seen_par(static_cast<std::size_t>(p.n_params), 0);
    std::vector<char> seen_out(static_cast<std::size_t>(p.n_outputs), 0);
    for (int64_t i = 0; i < n; ++i) {
        Buffer& b = p.buffers[static_cast<std::size_t>(i)];
        const int64_t* f = spec + i * FC_BUFFER_FIELDS;
        b.kind = f[0];
        b.a = f[1];
        b.b = f[2];
        b.nbytes = f[3];
        if (b.nbytes < 0) {
            return FC_ERR_PROGRAM;
        }
        b.root = i;
        b.root_offset = 0;
        auto claim = [&](std::vector<char>& seen, int64_t count) {
            if (b.a < 0 || b.a >= count || b.b != 0 || seen[static_cast<std::size_t>(b.a)]) {
                return false;
            }
            seen[static_cast<std::size_t>(b.a)] = 1;
            return true;
        };
        switch (b.kind) {
        case FC_BUF_INPUT:
            if (!claim(seen_in, p.n_inputs)) {
                return FC_ERR_PROGRAM;
            }
            break;
        case FC_BUF_PARAM:
            if (!claim(seen_par, p.n_params)) {
                return FC_ERR_PROGRAM;
            }
            break;
        case FC_BUF_OUTPUT:
            if (!claim(seen_out, p.n_outputs)) {
                return FC_ERR_PROGRAM;
            }
            break;
        case FC_BUF_CONST:
            if (b.a < 0 || b.a >= static_cast<int64_t>(p.consts.size()) || b.b != 0 ||
                (b.nbytes > 0 && p.consts[static_cast<std::size_t>(b.a)] == nullptr)) {
                return FC_ERR_PROGRAM;
            }
            break;
        case FC_BUF_ARENA: {
            int64_t end = 0;
            if (b.a != 0 || b.b < 0 || b.b % kArenaAlign != 0 || !add_ok(b.b, b.nbytes, &end)) {
                return FC_ERR_PROGRAM;
            }
            p.arena_bytes = std::max(p.arena_bytes, end);
            b.root = kArenaRoot;
            b.root_offset = b.b;
            break;
        }
        case FC_BUF_ALIAS: {
            int64_t end = 0;
            if (b.a < 0 || b.a >= i || !add_ok(b.b, b.nbytes, &end)) {
                return FC_ERR_PROGRAM;
            }
            const Buffer& base = p.buffers[static_cast<std::size_t>(b.a)];
            if (end > base.nbytes) {
                return FC_ERR_PROGRAM;
            }
            b.root = base.root;
            b.root_offset = base.root_offset + b.b;  // <= the root's size: no overflow
            break;
        }
        default:
            return FC_ERR_PROGRAM;
        }
    }
    return FC_OK;
}

bool writable(const Program& p, int64_t buffer)
{
    const Buffer& b = p.buffers[static_cast<std::size_t>(buffer)];
    return b.root == kArenaRoot || p.buffers[static_cast<std::size_t>(b.root)].kind == FC_BUF_OUTPUT;
}

bool overlap(const Buffer& x, const Buffer& y)
{
    if (x.root != y.root || x.nbytes == 0 || y.nbytes == 0) {
        return false;
    }
    return x.root_offset < y.root_offset + y.nbytes && y.root_offset < x.root_offset + x.nbytes;
}

int decode_code(Program& p)
{
    const int64_t len = static_cast<int64_t>(p.code.size());
    const int64_t n_buf = static_cast<int64_t>(p.buffers.size());
    int64_t pos = 0;
    int64_t dbl = 0;
    while (pos < len) {
        if (len - pos < FC_INSTR_HEADER) {
            return FC_ERR_PROGRAM;
        }
        Instr ins;
        const int64_t* h = p.code.data() + pos;
        ins.op = h[0];
        ins.n_in = h[1];
        ins.n_out = h[2];
        ins.n_int = h[3];
        ins.n_dbl = h[4];
        const OpSpec* spec = op_spec(ins.op);
        if (spec == nullptr || ins.n_in < 0 || ins.n_out < 0 || ins.n_int < 0 || ins.n_dbl < 0) {
            return FC_ERR_PROGRAM;
        }
        if (ins.n_in < spec->n_in_min || (spec->n_in_max >= 0 && ins.n_in > spec->n_in_max) ||
            ins.n_out < spec->n_out_min || (spec->n_out_max >= 0 && ins.n_out > spec->n_out_max)) {
            return FC_ERR_PROGRAM;
        }
        const int64_t rest = len - pos - FC_INSTR_HEADER;
        int64_t body = 0;
        if (!add_ok(ins.n_in, ins.n_out, &body) || !add_ok(body, ins.n_int, &body) || body > rest ||
            ins.n_dbl > static_cast<int64_t>(p.fimm.size()) - dbl) {
            return FC_ERR_PROGRAM;
        }
        ins.operands = static_cast<std::size_t>(pos + FC_INSTR_HEADER);
        ins.ints = ins.operands + static_cast<std::size_t>(ins.n_in + ins.n_out);
        ins.dbls = static_cast<std::size_t>(dbl);
        for (int64_t k = 0; k < ins.n_in + ins.n_out; ++k) {
            const int64_t id = p.code[ins.operands + static_cast<std::size_t>(k)];
            if (id < 0 || id >= n_buf || (k >= ins.n_in && !writable(p, id))) {
                return FC_ERR_PROGRAM;
            }
        }
        // An output never overlaps another operand of its instruction: kernels read inputs while
        // writing outputs, and the memory planner never shares memory between values alive at once.
        for (int64_t o = 0; o < ins.n_out; ++o) {
            const Buffer& ob = p.buffers[static_cast<std::size_t>(p.out(ins, o))];
            for (int64_t k = 0; k < ins.n_in + ins.n_out; ++k) {
                if (k == ins.n_in + o) {
                    continue;
                }
                const Buffer& other = p.buffers[static_cast<std::size_t>(p.code[ins.operands + static_cast<std::size_t>(k)])];
                if (overlap(ob, other)) {
                    return FC_ERR_PROGRAM;
                }
            }
        }
        const int status = spec->validate(p, ins);
        if (status != FC_OK) {
            return status;
        }
        p.has_callback = p.has_callback || ins.op == FC_OPC_CALLBACK;
        p.max_operands = std::max(p.max_operands, static_cast<std::size_t>(ins.n_in + ins.n_out));
        p.instrs.push_back(ins);
        pos += FC_INSTR_HEADER + body;
        dbl += ins.n_dbl;
    }
    // Every double immediate belongs to an instruction: left-overs mean a mis-encoded program.
    return dbl == static_cast<int64_t>(p.fimm.size()) ? FC_OK : FC_ERR_PROGRAM;
}

int create(const int64_t* buffers, int64_t n_buffers, const void* const* consts, int64_t n_consts,
           int64_t n_inputs, int64_t n_params, int64_t n_outputs, const int64_t* code, int64_t code_len,
           const double* fimm, int64_t fimm_len, fc_program** out)
{
    int64_t spec_len = 0;
    if (n_buffers < 0 || n_consts < 0 || n_inputs < 0 || n_params < 0 || n_outputs < 0 || code_len < 0 ||
        fimm_len < 0 || !mul_ok(n_buffers, FC_BUFFER_FIELDS, &spec_len)) {
        return FC_ERR_SIZE;
    }
    if ((buffers == nullptr && n_buffers > 0) || (consts == nullptr && n_consts > 0) ||
        (code == nullptr && code_len > 0) || (fimm == nullptr && fimm_len > 0)) {
        return FC_ERR_NULL;
    }
    fc_program* p = new fc_program;
    p->n_inputs = n_inputs;
    p->n_params = n_params;
    p->n_outputs = n_outputs;
    if (n_consts > 0) {
        p->consts.assign(consts, consts + n_consts);
    }
    if (code_len > 0) {
        p->code.assign(code, code + code_len);
    }
    if (fimm_len > 0) {
        p->fimm.assign(fimm, fimm + fimm_len);
    }
    int status = decode_buffers(*p, buffers, n_buffers);
    if (status == FC_OK) {
        status = decode_code(*p);
    }
    if (status == FC_OK && p->arena_bytes > 0) {
        // aligned_alloc wants a size that is a multiple of the alignment.
        if (p->arena_bytes > kMax - kArenaAlign) {
            status = FC_ERR_NOMEM;
        } else {
            const int64_t size = (p->arena_bytes + kArenaAlign - 1) / kArenaAlign * kArenaAlign;
            p->arena = static_cast<unsigned char*>(std::aligned_alloc(kArenaAlign, static_cast<std::size_t>(size)));
            if (p->arena == nullptr) {
                status = FC_ERR_NOMEM;
            }
        }
    }
    if (status != FC_OK) {
        std::free(p->arena);
        delete p;
        return status;
    }
    p->ptrs.resize(p->buffers.size());
    p->operand_ptrs.resize(p->max_operands);
    p->ranges.reserve(p->buffers.size());
    *out = p;
    return FC_OK;
}

// Pointers of every buffer for this run; FC_ERR_NULL / FC_ERR_ALIGN for bad caller pointers.
int resolve(Program& p, void* const* inputs, void* const* params, void* const* outputs)
{
    for (std::size_t i = 0; i < p.buffers.size(); ++i) {
        const Buffer& b = p.buffers[i];
        void* ptr = nullptr;
        switch (b.kind) {
        case FC_BUF_INPUT:
            ptr = inputs[b.a];
            break;
        case FC_BUF_PARAM:
            ptr = params[b.a];
            break;
        case FC_BUF_OUTPUT:
            ptr = outputs[b.a];
            break;
        case FC_BUF_CONST:
            // Read only: instructions never write a constant (checked at creation).
            ptr = const_cast<void*>(p.consts[static_cast<std::size_t>(b.a)]);
            break;
        case FC_BUF_ARENA:
            ptr = b.nbytes > 0 ? p.arena + b.b : nullptr;
            break;
        default:  // FC_BUF_ALIAS; its base comes first
            ptr = b.nbytes > 0 ? static_cast<unsigned char*>(p.ptrs[static_cast<std::size_t>(b.a)]) + b.b : nullptr;
            break;
        }
        if (b.nbytes == 0) {
            ptr = g_empty;
        } else if (ptr == nullptr) {
            return FC_ERR_NULL;
        }
        if (reinterpret_cast<std::uintptr_t>(ptr) % static_cast<std::uintptr_t>(b.align) != 0) {
            return FC_ERR_ALIGN;
        }
        p.ptrs[i] = ptr;
    }
    return FC_OK;
}

// No output may overlap another caller-provided buffer (inputs and parameters may share memory
// with each other: they are only read). Sorted sweep, O(n log n) in the number of buffers.
int check_external_overlap(Program& p)
{
    p.ranges.clear();
    for (std::size_t i = 0; i < p.buffers.size(); ++i) {
        const Buffer& b = p.buffers[i];
        if (b.kind == FC_BUF_ARENA || b.kind == FC_BUF_ALIAS || b.nbytes == 0) {
            continue;
        }
        const auto lo = reinterpret_cast<std::uintptr_t>(p.ptrs[i]);
        p.ranges.push_back({lo, lo + static_cast<std::uintptr_t>(b.nbytes), b.kind == FC_BUF_OUTPUT});
    }
    std::sort(p.ranges.begin(), p.ranges.end(),
              [](const Program::Range& x, const Program::Range& y) { return x.lo < y.lo; });
    std::uintptr_t hi_any = 0, hi_written = 0;
    for (const Program::Range& r : p.ranges) {
        if (r.lo < hi_written || (r.written && r.lo < hi_any)) {
            return FC_ERR_OVERLAP;
        }
        hi_any = std::max(hi_any, r.hi);
        if (r.written) {
            hi_written = std::max(hi_written, r.hi);
        }
    }
    return FC_OK;
}

int run(Program& p, void* const* inputs, void* const* params, void* const* outputs, fc_host_callback cb,
        void* user)
{
    int status = resolve(p, inputs, params, outputs);
    if (status == FC_OK) {
        status = check_external_overlap(p);
    }
    if (status != FC_OK) {
        return status;
    }
    RunContext ctx{p, cb, user};
    if (p.profiling) {
        ++p.profiled_runs;
    }
    for (std::size_t i = 0; i < p.instrs.size(); ++i) {
        const Instr& ins = p.instrs[i];
        if (p.profiling) {
            const auto t0 = std::chrono::steady_clock::now();
            status = op_spec(ins.op)->execute(ctx, ins);
            p.prof_seconds[i] += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        } else {
            status = op_spec(ins.op)->execute(ctx, ins);
        }
        if (status != FC_OK) {
            p.failed_at = static_cast<int64_t>(i);
            return status;
        }
    }
    return FC_OK;
}

}  // namespace

bool add_ok(int64_t a, int64_t b, int64_t* r)
{
    if (a < 0 || b < 0 || a > kMax - b) {
        return false;
    }
    *r = a + b;
    return true;
}

bool mul_ok(int64_t a, int64_t b, int64_t* r)
{
    if (a < 0 || b < 0 || (a != 0 && b > kMax / a)) {
        return false;
    }
    *r = a * b;
    return true;
}

bool check_bytes(Program& p, int64_t buffer, int64_t nbytes)
{
    return nbytes >= 0 && nbytes <= p.buffers[static_cast<std::size_t>(buffer)].nbytes;
}

bool check_dense(Program& p, int64_t buffer, int64_t dtype, int64_t n)
{
    int64_t bytes = 0;
    if (!valid_dtype(dtype) || !mul_ok(n, itemsize(dtype), &bytes) || !check_bytes(p, buffer, bytes)) {
        return false;
    }
    Buffer& b = p.buffers[static_cast<std::size_t>(buffer)];
    if (n > 0) {
        b.align = std::max(b.align, itemsize(dtype));
    }
    return true;
}

bool check_strided(Program& p, int64_t buffer, int64_t elem_bytes, int64_t ndim, const int64_t* shape,
                   const int64_t* strides)
{
    if (elem_bytes < 1 || ndim < 0) {
        return false;
    }
    int64_t last = 0;  // element index of the last element touched
    for (int64_t d = 0; d < ndim; ++d) {
        if (shape[d] < 0 || strides[d] < 0) {
            return false;
        }
    }
    for (int64_t d = 0; d < ndim; ++d) {
        if (shape[d] == 0) {
            return true;  // nothing is accessed
        }
        int64_t span = 0;
        if (!mul_ok(shape[d] - 1, strides[d], &span) || !add_ok(last, span, &last)) {
            return false;
        }
    }
    int64_t bytes = 0;
    if (!add_ok(last, 1, &last) || !mul_ok(last, elem_bytes, &bytes) || !check_bytes(p, buffer, bytes)) {
        return false;
    }
    Buffer& b = p.buffers[static_cast<std::size_t>(buffer)];
    if (elem_bytes <= 8 && (elem_bytes & (elem_bytes - 1)) == 0) {
        b.align = std::max(b.align, elem_bytes);
    }
    return true;
}

}  // namespace fcx

extern "C" {

int fc_program_create(const int64_t* buffers, int64_t n_buffers, const void* const* consts, int64_t n_consts,
                      int64_t n_inputs, int64_t n_params, int64_t n_outputs, const int64_t* code, int64_t code_len,
                      const double* fimm, int64_t fimm_len, fc_program** out)
{
    if (out == nullptr) {
        return FC_ERR_NULL;
    }
    *out = nullptr;
    try {
        return fcx::create(buffers, n_buffers, consts, n_consts, n_inputs, n_params, n_outputs, code, code_len,
                           fimm, fimm_len, out);
    } catch (const std::bad_alloc&) {
        return FC_ERR_NOMEM;
    } catch (const std::length_error&) {
        return FC_ERR_NOMEM;
    }
}

int fc_program_run(fc_program* prog, void* const* inputs, void* const* params, void* const* outputs,
                   fc_host_callback cb, void* user)
{
    if (prog == nullptr || (inputs == nullptr && prog->n_inputs > 0) || (params == nullptr && prog->n_params > 0) ||
        (outputs == nullptr && prog->n_outputs > 0) || (cb == nullptr && prog->has_callback)) {
        return FC_ERR_NULL;
    }
    if (prog->busy.exchange(true, std::memory_order_acquire)) {
        return FC_ERR_BUSY;
    }
    prog->failed_at = -1;
    const int status = fcx::run(*prog, inputs, params, outputs, cb, user);
    prog->busy.store(false, std::memory_order_release);
    return status;
}

int fc_program_destroy(fc_program* prog)
{
    if (prog != nullptr) {
        std::free(prog->arena);
        delete prog;
    }
    return FC_OK;
}

int fc_program_arena_bytes(const fc_program* prog, int64_t* bytes)
{
    if (prog == nullptr || bytes == nullptr) {
        return FC_ERR_NULL;
    }
    *bytes = prog->arena_bytes;
    return FC_OK;
}

int fc_program_instruction_count(const fc_program* prog, int64_t* n)
{
    if (prog == nullptr || n == nullptr) {
        return FC_ERR_NULL;
    }
    *n = static_cast<int64_t>(prog->instrs.size());
    return FC_OK;
}

int fc_program_set_profiling(fc_program* prog, int on)
{
    if (prog == nullptr) {
        return FC_ERR_NULL;
    }
    if (prog->busy.exchange(true, std::memory_order_acquire)) {
        return FC_ERR_BUSY;
    }
    int status = FC_OK;
    try {
        if (on) {  // off keeps the totals readable
            prog->prof_seconds.assign(prog->instrs.size(), 0.0);
            prog->profiled_runs = 0;
        }
        prog->profiling = on != 0;
    } catch (const std::bad_alloc&) {
        prog->profiling = false;
        status = FC_ERR_NOMEM;
    }
    prog->busy.store(false, std::memory_order_release);
    return status;
}

int fc_program_profile(fc_program* prog, double* seconds, int64_t n, int64_t* runs)
{
    if (prog == nullptr || runs == nullptr || (seconds == nullptr && n > 0)) {
        return FC_ERR_NULL;
    }
    if (n < 0 || n > static_cast<int64_t>(prog->instrs.size())) {
        return FC_ERR_SIZE;
    }
    if (prog->busy.exchange(true, std::memory_order_acquire)) {
        return FC_ERR_BUSY;
    }
    for (int64_t i = 0; i < n; ++i) {
        const auto k = static_cast<std::size_t>(i);
        seconds[i] = k < prog->prof_seconds.size() ? prog->prof_seconds[k] : 0.0;
    }
    *runs = prog->profiled_runs;
    prog->busy.store(false, std::memory_order_release);
    return FC_OK;
}

int fc_program_failed_instruction(const fc_program* prog, int64_t* index)
{
    if (prog == nullptr || index == nullptr) {
        return FC_ERR_NULL;
    }
    *index = prog->failed_at;
    return FC_OK;
}

}  // extern "C"
