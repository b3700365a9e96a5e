/*
 * Loaded with LD_PRELOAD, makes a process run as it would on Linux 5.14
 * to 6.1, whose SO_REUSEPORT selection ignores SO_INCOMING_CPU: setting
 * that option succeeds and does nothing, so no socket of the process ever
 * carries a CPU tag, and its groups pick a listener by hash alone. Every
 * other setsockopt goes to the C library's.
 *
 * Built by benches/delaybed/nosteer.rs with `cc -shared -fPIC`; used by
 * the delay benchmark (--tags off) and the tests that need a kernel that
 * does not steer.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <sys/socket.h>

#ifndef SO_INCOMING_CPU
#define SO_INCOMING_CPU 49
#endif

typedef int (*setsockopt_fn)(int, int, int, const void *, socklen_t);

int setsockopt(int fd, int level, int name, const void *value, socklen_t len)
{
    static setsockopt_fn next;
    if (level == SOL_SOCKET && name == SO_INCOMING_CPU)
        return 0;
    if (!next)
        next = (setsockopt_fn)dlsym(RTLD_NEXT, "setsockopt");
    if (!next) {
        errno = ENOSYS;
        return -1;
    }
    return next(fd, level, name, value, len);
}
