#include "notify.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* The protocol is one datagram per message on an AF_UNIX socket; that is
 * all libsystemd's sd_notify does in the common case, so a dependency on it
 * would buy nothing. */
int cap_notify_send(const char *state) {
  const char *path = getenv("NOTIFY_SOCKET");
  struct sockaddr_un addr;
  size_t len;
  int fd, rc = 0;

  if (path == NULL || path[0] == '\0')
    return 0;
  len = strlen(path);
  /* A path name or, with a leading '@', an abstract socket name. */
  if ((path[0] != '/' && path[0] != '@') || len >= sizeof(addr.sun_path))
    return -EINVAL;
  memset(&addr, 0, sizeof(addr));
  addr.sun_family = AF_UNIX;
  memcpy(addr.sun_path, path, len);
  if (addr.sun_path[0] == '@')
    addr.sun_path[0] = '\0';
  fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -errno;
  socklen_t alen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
  if (sendto(fd, state, strlen(state), MSG_DONTWAIT | MSG_NOSIGNAL, (struct sockaddr *)&addr,
             alen) < 0)
    rc = -errno;
  close(fd);
  return rc;
}
