#ifndef CAP_SANDBOX_EXEC_H
#define CAP_SANDBOX_EXEC_H

/* The sandbox helper: what runs in a child between fork and exec (see
 * sandbox.h for the server's side).  It needs nothing but libc, so that it
 * is also the whole of the small cap-sandbox binary. */

/* cap-server runs as the helper when this is its first argument. */
#define CAP_SANDBOX_FLAG "--sandbox-exec"

/* Returns the Landlock ABI version the running kernel offers, 0 without. */
int cap_sandbox_kernel_abi(void);

/* The helper: argv is "NAME [OPTION]... -- PROGRAM [ARG]..." (cap-sandbox's
 * own argv, or cap-server's from its --sandbox-exec on).  Never returns
 * when PROGRAM runs; otherwise prints one line starting "cap-server
 * sandbox:" to stderr and returns 126 (setup failed) or 127 (PROGRAM could
 * not be executed) for main() to exit with. */
int cap_sandbox_exec_main(int argc, char **argv);

#endif
