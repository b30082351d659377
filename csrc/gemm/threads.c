/* The GEMM thread pool and the per-thread packing buffers.
 *
 * Pool: workers are created on first need and then kept (thread creation costs tens of
 * microseconds, as much as a whole RNN-sized GEMM). A parallel region is announced by bumping a
 * generation counter; workers spin on it for a short while after their last region (back-to-back
 * GEMMs of an RNN step start each other's regions within microseconds) and then sleep on a
 * condition variable, so an idle pool costs no CPU. One region runs at a time: a caller that finds
 * the pool busy runs its chunks itself (see fc_pool_run), which also makes nested use safe.
 *
 * Buffers: thread-specific data with a destructor, so every thread (the application's and the
 * pool's) has its own packing buffers, kept between calls and freed when the thread exits. */
#define _GNU_SOURCE /* sched_getaffinity, CPU_COUNT */

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "flexcore/gemm.h"
#include "gemm_internal.h"

#define FC_MAX_THREADS 64

/* How long an idle worker polls for the next region before sleeping, and a caller polls for the
 * workers to finish before sleeping. */
#define FC_SPIN_NS 100000

/* Join delays assumed before any region has measured one: a polling worker sees a region within
 * a microsecond; a sleeping one needs a futex wake-up and a reschedule (tens of microseconds in a
 * VM). */
#define FC_JOIN_HOT_NS 1000
#define FC_JOIN_COLD_NS 40000

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ------------------------------------------------------------------------------ thread count */

static atomic_int requested_threads; /* 0 until first read or set */

static int default_threads(void)
{
    const char* env = getenv("FLEXCORE_NUM_THREADS");
    if (env != NULL && *env != '\0') {
        char* end = NULL;
        errno = 0;
        const long v = strtol(env, &end, 10);
        if (errno == 0 && end != NULL && *end == '\0' && v >= 1) {
            return v > FC_MAX_THREADS ? FC_MAX_THREADS : (int)v;
        }
    }
    int n = 0;
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        n = CPU_COUNT(&set); /* the CPUs this process may use (taskset, cgroups' cpusets) */
    }
    if (n < 1) {
        const long online = sysconf(_SC_NPROCESSORS_ONLN);
        n = online >= 1 ? (online > FC_MAX_THREADS ? FC_MAX_THREADS : (int)online) : 1;
    }
    return n > FC_MAX_THREADS ? FC_MAX_THREADS : n;
}

int fc_set_num_threads(int n)
{
    if (n < 1) {
        return FC_ERR_SIZE;
    }
    atomic_store(&requested_threads, n > FC_MAX_THREADS ? FC_MAX_THREADS : n);
    return FC_OK;
}

int fc_get_num_threads(void)
{
    int n = atomic_load(&requested_threads);
    if (n == 0) {
        /* A racing fc_set_num_threads wins over the default. */
        int expected = 0;
        const int dflt = default_threads();
        n = atomic_compare_exchange_strong(&requested_threads, &expected, dflt) ? dflt : expected;
    }
    return n;
}

/* ------------------------------------------------------------------------------ pool */

/* A region is a set of chunks; whoever is inside the region (the caller, and the workers that
 * joined while it was open) claims the next chunk from a shared counter until none is left. So a
 * worker that the OS has not scheduled yet (other processes on the cores, a worker still asleep)
 * never delays the caller: the caller runs the chunks itself and then closes the region; a worker
 * that wakes later finds it closed and goes back to waiting. */
static struct {
    pthread_mutex_t lock; /* guards sleeping: the condition variables' predicates */
    pthread_cond_t wake;  /* generation moved on */
    pthread_cond_t done;  /* active reached 0 */
    atomic_flag busy;     /* a region is running (held by its caller) */
    atomic_uint generation; /* bumped when a region opens */
    atomic_int open;        /* 1 while the current region accepts workers */
    atomic_int active;      /* workers inside the region (or checking whether they may enter) */
    atomic_int next_chunk;
    atomic_int joined;          /* a worker has claimed a chunk of the current region */
    _Atomic int64_t open_ns;    /* when the current region opened */
    _Atomic int64_t join_delay; /* ns from open_ns to the first worker's first chunk */
    _Atomic int64_t last_end_ns; /* when the last region closed: workers poll until + FC_SPIN_NS */
    /* Join delays (ns from a region's opening to a worker's first chunk), moving averages for
     * regions that opened while the workers still polled (hot) or after they slept (cold). */
    _Atomic int64_t join_ns[2];
    /* The current region, written by its caller before it opens. */
    fc_pool_task task;
    void* arg;
    int nchunks;
    int nthreads;
    int nworkers; /* created so far (tids 1..nworkers); only the busy holder changes it */
} pool = {
    .lock = PTHREAD_MUTEX_INITIALIZER,
    .wake = PTHREAD_COND_INITIALIZER,
    .done = PTHREAD_COND_INITIALIZER,
    .busy = ATOMIC_FLAG_INIT,
    .join_ns = {FC_JOIN_HOT_NS, FC_JOIN_COLD_NS},
};

static void run_chunks(int is_worker)
{
    for (;;) {
        const int chunk = atomic_fetch_add_explicit(&pool.next_chunk, 1, memory_order_relaxed);
        if (chunk >= pool.nchunks) {
            return;
        }
        if (is_worker && !atomic_load_explicit(&pool.joined, memory_order_relaxed) &&
            !atomic_exchange(&pool.joined, 1)) {
            /* The first worker in: its delay is the sample (the caller folds it in at the end). */
            atomic_store(&pool.join_delay, now_ns() - atomic_load(&pool.open_ns));
        }
        pool.task(pool.arg, chunk);
    }
}

/* Folds one region's join delay into the moving average of its kind (1/4 weight). A region that
 * no worker joined gives only a lower bound (its length), which may raise the average but never
 * lower it: a short region says nothing about how soon a worker would have come. */
static void record_join(int cold, int64_t sample, int censored)
{
    const int64_t avg = atomic_load_explicit(&pool.join_ns[cold], memory_order_relaxed);
    if (censored && sample <= avg) {
        return;
    }
    atomic_store_explicit(&pool.join_ns[cold], avg + (sample - avg) / 4, memory_order_relaxed);
}

double fc_pool_join_delay_ns(void)
{
    const int64_t idle = now_ns() - atomic_load_explicit(&pool.last_end_ns, memory_order_relaxed);
    const int cold = idle < 0 || idle > FC_SPIN_NS * 3 / 4;
    return (double)atomic_load_explicit(&pool.join_ns[cold], memory_order_relaxed);
}

static void leave_region(void)
{
    if (atomic_fetch_sub(&pool.active, 1) == 1) {
        pthread_mutex_lock(&pool.lock);
        pthread_cond_signal(&pool.done);
        pthread_mutex_unlock(&pool.lock);
    }
}

static void* worker_main(void* arg)
{
    const int tid = (int)(intptr_t)arg;
    unsigned seen = 0;
    for (;;) {
        unsigned now = atomic_load(&pool.generation);
        if (now == seen) {
            const int64_t until = now_ns() + FC_SPIN_NS;
            for (int spin = 1; now == seen; ++spin) {
                cpu_relax();
                now = atomic_load(&pool.generation);
                if (spin % 64 == 0 && now_ns() > until) {
                    break;
                }
            }
        }
        if (now == seen) {
            pthread_mutex_lock(&pool.lock);
            while ((now = atomic_load(&pool.generation)) == seen) {
                pthread_cond_wait(&pool.wake, &pool.lock);
            }
            pthread_mutex_unlock(&pool.lock);
        }
        seen = now;
        /* Enter, then look whether the region is still open: the caller closes it, then waits for
         * active to drop to 0, so (all atomics sequentially consistent) either this worker sees it
         * closed, or the caller waits for this worker. */
        atomic_fetch_add(&pool.active, 1);
        if (atomic_load(&pool.open) && tid < pool.nthreads) {
            run_chunks(1);
        }
        leave_region();
    }
    return NULL;
}

/* A child process after fork() has only the forking thread: start over with an empty pool (the
 * parent's workers and any region in flight do not exist there). */
static void pool_after_fork_in_child(void)
{
    pthread_mutex_init(&pool.lock, NULL);
    pthread_cond_init(&pool.wake, NULL);
    pthread_cond_init(&pool.done, NULL);
    atomic_flag_clear(&pool.busy);
    atomic_store(&pool.open, 0);
    atomic_store(&pool.active, 0);
    pool.nworkers = 0;
    /* The parent's delays say nothing about the child's new workers. */
    atomic_store(&pool.join_ns[0], FC_JOIN_HOT_NS);
    atomic_store(&pool.join_ns[1], FC_JOIN_COLD_NS);
    atomic_store(&pool.last_end_ns, 0);
}

static void pool_register_fork_handler(void)
{
    pthread_atfork(NULL, NULL, pool_after_fork_in_child);
}

/* Creates workers up to tid nthreads - 1 (fewer when the system refuses more threads); returns
 * whether it created any. Called by the busy holder only. */
static int pool_grow(int nthreads)
{
    static pthread_once_t fork_once = PTHREAD_ONCE_INIT;
    pthread_once(&fork_once, pool_register_fork_handler);
    const int before = pool.nworkers;
    while (pool.nworkers < nthreads - 1) {
        pthread_t thread;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        void* tid = (void*)(intptr_t)(pool.nworkers + 1);
        const int rc = pthread_create(&thread, &attr, worker_main, tid);
        pthread_attr_destroy(&attr);
        if (rc != 0) {
            break;
        }
        ++pool.nworkers;
    }
    return pool.nworkers != before;
}

void fc_pool_run(fc_pool_task task, void* arg, int nchunks, int nthreads)
{
    if (nthreads <= 1 || nchunks <= 1 ||
        atomic_flag_test_and_set_explicit(&pool.busy, memory_order_acquire)) {
        for (int chunk = 0; chunk < nchunks; ++chunk) {
            task(arg, chunk);
        }
        return;
    }
    const int grew = pool_grow(nthreads); /* a new thread's start is no join delay to learn */
    const int64_t opened = now_ns();
    const int64_t idle = opened - atomic_load_explicit(&pool.last_end_ns, memory_order_relaxed);
    const int cold = idle < 0 || idle > FC_SPIN_NS * 3 / 4;
    atomic_store(&pool.open_ns, opened);
    atomic_store(&pool.joined, 0);
    pool.task = task;
    pool.arg = arg;
    pool.nchunks = nchunks;
    pool.nthreads = nthreads;
    atomic_store(&pool.next_chunk, 0);
    atomic_store(&pool.open, 1);
    pthread_mutex_lock(&pool.lock);
    atomic_fetch_add(&pool.generation, 1);
    pthread_cond_broadcast(&pool.wake);
    pthread_mutex_unlock(&pool.lock);

    run_chunks(0);

    atomic_store(&pool.open, 0);
    if (atomic_load(&pool.active) != 0) {
        const int64_t until = now_ns() + FC_SPIN_NS;
        for (int spin = 1; atomic_load(&pool.active) != 0; ++spin) {
            cpu_relax();
            if (spin % 64 == 0 && now_ns() > until) {
                break;
            }
        }
        pthread_mutex_lock(&pool.lock);
        while (atomic_load(&pool.active) != 0) {
            pthread_cond_wait(&pool.done, &pool.lock);
        }
        pthread_mutex_unlock(&pool.lock);
    }
    const int64_t closed = now_ns();
    if (!grew) {
        const int joined = atomic_load(&pool.joined);
        record_join(cold, joined ? atomic_load(&pool.join_delay) : closed - opened, !joined);
    }
    atomic_store_explicit(&pool.last_end_ns, closed, memory_order_relaxed);
    atomic_flag_clear_explicit(&pool.busy, memory_order_release);
}

/* ------------------------------------------------------------------------------ buffers */

typedef struct thread_buffers {
    void* ptr[FC_GEMM_BUF_SLOTS];
    size_t bytes[FC_GEMM_BUF_SLOTS];
} thread_buffers;

static pthread_key_t buffers_key;
static pthread_once_t buffers_once = PTHREAD_ONCE_INIT;
static int buffers_key_ok;

static void free_buffers(void* p)
{
    thread_buffers* tb = p;
    for (int s = 0; s < FC_GEMM_BUF_SLOTS; ++s) {
        free(tb->ptr[s]);
    }
    free(tb);
}

static void make_buffers_key(void)
{
    buffers_key_ok = pthread_key_create(&buffers_key, free_buffers) == 0;
}

void* fc_thread_buffer(int slot, size_t bytes)
{
    pthread_once(&buffers_once, make_buffers_key);
    if (!buffers_key_ok || slot < 0 || slot >= FC_GEMM_BUF_SLOTS) {
        return NULL;
    }
    thread_buffers* tb = pthread_getspecific(buffers_key);
    if (tb == NULL) {
        tb = calloc(1, sizeof *tb);
        if (tb == NULL || pthread_setspecific(buffers_key, tb) != 0) {
            free(tb);
            return NULL;
        }
    }
    if (tb->bytes[slot] < bytes || tb->ptr[slot] == NULL) {
        /* Grow by half again, so slowly growing sizes do not reallocate every call; round to the
         * alignment (aligned_alloc wants a multiple of it). */
        size_t want = bytes + bytes / 2;
        if (want < bytes || want > SIZE_MAX - FC_GEMM_ALIGN) {
            want = bytes;
        }
        if (want > SIZE_MAX - FC_GEMM_ALIGN) {
            return NULL;
        }
        want = (want + FC_GEMM_ALIGN - 1) / FC_GEMM_ALIGN * FC_GEMM_ALIGN;
        if (want == 0) {
            want = FC_GEMM_ALIGN;
        }
        void* fresh = aligned_alloc(FC_GEMM_ALIGN, want);
        if (fresh == NULL) {
            return NULL;
        }
        free(tb->ptr[slot]);
        tb->ptr[slot] = fresh;
        tb->bytes[slot] = want;
    }
    return tb->ptr[slot];
}
