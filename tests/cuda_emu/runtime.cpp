// The emulator's scheduler (see emu.h): blocks in order, threads as fibers meeting at barriers.
#include <ucontext.h>

#include <cstdlib>
#include <vector>

#include "emu.h"

namespace emu {

State state;

namespace {

enum { RUNNING = 0, AT_BARRIER = 1, DONE = 2 };

constexpr std::size_t kStack = 128 * 1024;

struct Fiber {
    ucontext_t ctx;
    int status;
    uint3 tid;
};

struct Launch {
    void (*body)(void*);
    void* params;
};

ucontext_t g_sched;
std::vector<Fiber> g_fibers;
std::vector<char> g_stacks;
std::vector<unsigned char> g_dyn;
int g_current = -1;
Launch g_launch;

void fiber_main()
{
    g_launch.body(g_launch.params);
    g_fibers[static_cast<std::size_t>(g_current)].status = DONE;
    // returning resumes uc_link: the scheduler
}

}  // namespace

void syncthreads()
{
    if (g_current < 0) {
        std::fprintf(stderr, "emu: __syncthreads outside a kernel\n");
        std::abort();
    }
    Fiber& f = g_fibers[static_cast<std::size_t>(g_current)];
    f.status = AT_BARRIER;
    swapcontext(&f.ctx, &g_sched);
}

// Returns 0, or: 1 bad launch shape, 2 divergent barrier, 3 too much dynamic shared memory.
int launch(const unsigned* grid, const unsigned* block, std::size_t shmem, void (*body)(void*), void* params)
{
    const dim3 g(grid[0], grid[1], grid[2]), b(block[0], block[1], block[2]);
    const unsigned long nt = static_cast<unsigned long>(b.x) * b.y * b.z;
    if (nt == 0 || nt > 1024 || b.z > 64 || g.x == 0 || g.y == 0 || g.z == 0 || g.y > 65535 || g.z > 65535) {
        return 1;
    }
    if (shmem > 48 * 1024) {
        return 3;
    }
    g_fibers.resize(nt);
    if (g_stacks.size() < nt * kStack) {
        g_stacks.resize(nt * kStack);
    }
    g_dyn.assign(shmem + 16, 0xFF);  // poisoned: NaN for floats, -1 for integers
    g_launch = {body, params};
    state.block_dim = b;
    state.grid_dim = g;
    state.dyn_shared = shmem ? g_dyn.data() : nullptr;
    int status = 0;
    for (unsigned bz = 0; bz < g.z && status == 0; ++bz) {
        for (unsigned by = 0; by < g.y && status == 0; ++by) {
            for (unsigned bx = 0; bx < g.x && status == 0; ++bx) {
                state.block_idx = {bx, by, bz};
                if (shmem) {
                    std::memset(g_dyn.data(), 0xFF, shmem);
                }
                for (unsigned long t = 0; t < nt; ++t) {
                    Fiber& f = g_fibers[t];
                    f.status = RUNNING;
                    f.tid = {static_cast<unsigned>(t % b.x), static_cast<unsigned>((t / b.x) % b.y),
                             static_cast<unsigned>(t / (static_cast<unsigned long>(b.x) * b.y))};
                    getcontext(&f.ctx);
                    f.ctx.uc_stack.ss_sp = g_stacks.data() + t * kStack;
                    f.ctx.uc_stack.ss_size = kStack;
                    f.ctx.uc_link = &g_sched;
                    makecontext(&f.ctx, fiber_main, 0);
                }
                for (int phase = 0;; ++phase) {
                    for (unsigned long k = 0; k < nt; ++k) {
                        const unsigned long t = (phase % 2 == 0) ? k : nt - 1 - k;
                        Fiber& f = g_fibers[t];
                        g_current = static_cast<int>(t);
                        state.thread_idx = f.tid;
                        swapcontext(&g_sched, &f.ctx);
                    }
                    g_current = -1;
                    unsigned long waiting = 0, done = 0;
                    for (auto& f : g_fibers) {
                        waiting += f.status == AT_BARRIER;
                        done += f.status == DONE;
                    }
                    if (done == nt) {
                        break;
                    }
                    if (waiting != nt) {
                        status = 2;  // some threads finished, others wait at __syncthreads
                        break;
                    }
                    for (auto& f : g_fibers) {
                        f.status = RUNNING;
                    }
                }
            }
        }
    }
    g_current = -1;
    return status;
}

}  // namespace emu
