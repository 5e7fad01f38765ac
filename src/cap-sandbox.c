/* cap-sandbox: the sandbox helper on its own, linked with libc alone so
 * that it starts quickly.  cap-server spawns it for every child instead
 * of re-executing itself; both run cap_sandbox_exec_main. */
#include "sandbox_exec.h"

#include <unistd.h>

int main(int argc, char **argv) {
  /* No exit handlers: the sandbox may already deny what they would read. */
  _exit(cap_sandbox_exec_main(argc, argv));
}
