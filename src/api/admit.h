#ifndef CAP_ADMIT_H
#define CAP_ADMIT_H

#include <stdint.h>
#include <sys/socket.h>

struct cap_exchange;

/* Decides, once a request's headers are in and before any body is read,
 * whether it may proceed: credentials in the URL, routing, Expect, the
 * per-client rate limit, the token, the per-token rate limit, the content
 * type and the body size, in that order.  peer is the TCP peer.  Fills
 * x->client, x->route and x->token_name.  Returns 0 to proceed, or -1 with
 * the error response set in x. */
int cap_admit_request(struct cap_exchange *x, const struct sockaddr *peer, uint64_t now_ms);

#endif
