/*
 * pause: the sandbox ("pause") container of every pod on the test cluster's kubelet nodes.
 *
 * It holds the pod's namespaces open and does nothing else: it sleeps until a signal comes,
 * exits 0 on SIGINT or SIGTERM (so a pod stops at once instead of waiting for SIGKILL), and
 * reaps zombies on SIGCHLD, since it is PID 1 of the pod when the pod shares one PID namespace.
 *
 * Built by e2e/src/image.rs with `gcc -static -Os` and stripped: no libc in the image.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void stop(int sig)
{
    (void)sig;
    _exit(0); /* async-signal-safe, unlike exit() */
}

static void reap(int sig)
{
    int saved = errno; /* waitpid may change errno under the interrupted code */

    (void)sig;
    while (waitpid(-1, NULL, WNOHANG) > 0)
        ;
    errno = saved;
}

static int on(int sig, void (*handler)(int))
{
    struct sigaction sa;

    memset(&sa, 0, sizeof sa);
    sa.sa_handler = handler;
    sa.sa_flags = SA_RESTART | (sig == SIGCHLD ? SA_NOCLDSTOP : 0);
    sigemptyset(&sa.sa_mask);
    return sigaction(sig, &sa, NULL);
}

int main(int argc, char **argv)
{
    (void)argv;
    if (argc > 1) {
        fprintf(stderr, "pause takes no arguments\n");
        return 2;
    }
    if (on(SIGINT, stop) || on(SIGTERM, stop) || on(SIGCHLD, reap)) {
        perror("pause: sigaction");
        return 1;
    }
    if (getpid() != 1)
        fprintf(stderr, "pause: warning: not PID 1 (it is meant to be a pod's first process)\n");
    for (;;)
        pause();
}
