#ifndef CAP_NOTIFY_H
#define CAP_NOTIFY_H

/* Sends state ("READY=1", "STOPPING=1", "STATUS=...", lines joined by
 * newlines) to the service manager over the datagram socket named by
 * $NOTIFY_SOCKET, as systemd's Type=notify expects.  Does nothing and
 * returns 0 when the variable is unset; otherwise 0 or a negative errno.
 * Never blocks: a full socket queue drops the message. */
int cap_notify_send(const char *state);

#endif
