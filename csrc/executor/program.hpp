// The executor's internal data: a decoded, validated program (see flexcore/executor.h for the
// encoding). Shared by program.cpp (creation, validation, the run loop) and ops.cpp (one validate
// and one execute function per opcode).
#ifndef FLEXCORE_EXECUTOR_PROGRAM_HPP
#define FLEXCORE_EXECUTOR_PROGRAM_HPP

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "flexcore/executor.h"
#include "flexcore/flexcore.h"

namespace fcx {

// Dtype codes are fc_dtype's (flexcore/kernels.h).
inline int64_t itemsize(int64_t dt) { return dt == FC_F32 ? 4 : dt == FC_BOOL ? 1 : 8; }
inline bool valid_dtype(int64_t dt) { return dt >= 0 && dt < FC_DTYPE_COUNT; }

// Root of every ARENA buffer: they all live in the one arena block.
constexpr int64_t kArenaRoot = -1;

struct Buffer {
    int64_t kind = 0, a = 0, b = 0, nbytes = 0;
    int64_t root = 0;         // buffer id of the non-alias buffer underneath (kArenaRoot: arena)
    int64_t root_offset = 0;  // byte offset from the root's start
    int64_t align = 1;        // alignment its pointer needs: the largest element size read there
};

struct Instr {
    int64_t op = 0;
    int64_t n_in = 0, n_out = 0, n_int = 0, n_dbl = 0;
    std::size_t operands = 0;  // index in Program::code of in_0 (outs follow the ins)
    std::size_t ints = 0;      // index in Program::code of int_0
    std::size_t dbls = 0;      // index in Program::fimm of the first double
    std::size_t aux32 = 0;     // index in Program::aux32 of data derived at validation
    std::size_t aux64 = 0;     // index in Program::aux64 of data derived at validation
};

struct Program {
    std::vector<Buffer> buffers;
    std::vector<int64_t> code;  // the caller's encoding, copied
    std::vector<double> fimm;
    std::vector<Instr> instrs;
    std::vector<const void*> consts;
    std::vector<int32_t> aux32;  // per-instruction data in the form a kernel wants (fused code)
    std::vector<int64_t> aux64;
    int64_t n_inputs = 0, n_params = 0, n_outputs = 0;
    unsigned char* arena = nullptr;
    int64_t arena_bytes = 0;
    bool has_callback = false;
    std::size_t max_operands = 0;

    // Per-run scratch, kept so a run allocates nothing (a program runs in one thread at a time).
    std::vector<void*> ptrs;             // resolved pointer of every buffer
    std::vector<void*> operand_ptrs;     // operands of a CALLBACK instruction
    struct Range {
        std::uintptr_t lo, hi;
        bool written;
    };
    std::vector<Range> ranges;           // external buffers, for the overlap check
    std::atomic<bool> busy{false};
    int64_t failed_at = -1;
    bool profiling = false;            // fc_program_set_profiling
    int64_t profiled_runs = 0;
    std::vector<double> prof_seconds;  // per instruction, while profiling

    int64_t in(const Instr& ins, int64_t i) const { return code[ins.operands + static_cast<std::size_t>(i)]; }
    int64_t out(const Instr& ins, int64_t i) const
    {
        return code[ins.operands + static_cast<std::size_t>(ins.n_in + i)];
    }
    int64_t imm(const Instr& ins, int64_t i) const { return code[ins.ints + static_cast<std::size_t>(i)]; }
    const int64_t* imms(const Instr& ins) const { return code.data() + ins.ints; }
    double dbl(const Instr& ins, int64_t i) const { return fimm[ins.dbls + static_cast<std::size_t>(i)]; }
};

// What an instruction's execute function sees of the run.
struct RunContext {
    Program& prog;
    fc_host_callback cb;
    void* user;
    void* ptr(int64_t buffer) const { return prog.ptrs[static_cast<std::size_t>(buffer)]; }
};

// Validation helpers for ops.cpp. Each returns false when the access does not fit; it also raises
// the buffer's alignment requirement to the element size (checked on every run's pointers).
bool check_dense(Program& p, int64_t buffer, int64_t dtype, int64_t n);
bool check_bytes(Program& p, int64_t buffer, int64_t nbytes);
// A strided access of `ndim` axes of elements of `elem_bytes` bytes, element strides >= 0 (0: the
// axis repeats one element).
bool check_strided(Program& p, int64_t buffer, int64_t elem_bytes, int64_t ndim, const int64_t* shape,
                   const int64_t* strides);
// a + b and a * b for non-negative values, false on overflow.
bool add_ok(int64_t a, int64_t b, int64_t* r);
bool mul_ok(int64_t a, int64_t b, int64_t* r);

struct OpSpec {
    const char* name;
    int64_t n_in_min, n_in_max;  // operand counts (max -1: unbounded)
    int64_t n_out_min, n_out_max;
    int (*validate)(Program& p, Instr& ins);  // FC_OK or an error status; may fill ins.aux32/aux64
    int (*execute)(RunContext& ctx, const Instr& ins);
};

// The table of every opcode, indexed by fc_opcode.
const OpSpec* op_spec(int64_t opcode);

}  // namespace fcx

// The opaque handle of the C ABI is the program itself.
struct fc_program : fcx::Program {};

#endif  // FLEXCORE_EXECUTOR_PROGRAM_HPP
