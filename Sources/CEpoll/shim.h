// Linux interfaces Glibc's Swift module does not export: epoll(7) for the HTTP server's event loop, and the thread id.
#include <sys/epoll.h>

// The calling thread's kernel id, for per-thread scheduling priority (setpriority(2) on a
// thread id): glibc declares gettid() only under _GNU_SOURCE, which Swift's Glibc lacks.
#include <sys/syscall.h>
#include <unistd.h>
static inline int kalavara_thread_id(void) { return (int)syscall(SYS_gettid); }

// Puts the calling thread in the SCHED_IDLE class: it runs only when no normal thread wants
// the CPU, and a normal thread waking up preempts it at once. Returns 0 or -1 (errno).
#include <sched.h>
static inline int kalavara_thread_idle_priority(void) {
    struct sched_param param = { .sched_priority = 0 };
    return (int)syscall(SYS_sched_setscheduler, (int)syscall(SYS_gettid), 5 /* SCHED_IDLE */, &param);
}

// Starts write-back of a file range without waiting (sync_file_range(2), declared by glibc
// only under _GNU_SOURCE): a large value being written does not pile up dirty pages that a
// small write's fsync would then wait behind.
#include <fcntl.h>
static inline int kalavara_start_writeback(int fd, long long offset, long long count) {
    return (int)syscall(SYS_sync_file_range, fd, offset, count, 2 /* SYNC_FILE_RANGE_WRITE */);
}

// rename(2) that fails with EEXIST instead of replacing the target (renameat2 with
// RENAME_NOREPLACE, not exported by Swift's Glibc): a version of a value is written once.
static inline int kalavara_rename_noreplace(const char *from, const char *to) {
    return (int)syscall(SYS_renameat2, AT_FDCWD, from, AT_FDCWD, to, 1 /* RENAME_NOREPLACE */);
}

// splice(2) (declared by glibc only under _GNU_SOURCE): moves bytes between a socket and a
// pipe inside the kernel, so a proxy (the S3 gateway serving a volume's answer) never copies
// a value through user space. SPLICE_F_MOVE, and SPLICE_F_MORE when more is to follow (as
// MSG_MORE, it holds back a partial segment: never on the last piece).
static inline long kalavara_splice(int from, int to, unsigned long count, int more) {
    return (long)syscall(SYS_splice, from, (void *)0, to, (void *)0, count, 1 | (more ? 4 : 0));
}
// F_SETPIPE_SZ: a larger pipe moves more per splice.
static inline int kalavara_pipe_size(int fd, int size) { return fcntl(fd, 1031 /* F_SETPIPE_SZ */, size); }

// syncfs(2): writes back everything dirty on the filesystem holding fd and waits (the
// volume's journal checkpoint; glibc declares it only under _GNU_SOURCE).
static inline int kalavara_syncfs(int fd) { return (int)syscall(SYS_syncfs, fd); }
