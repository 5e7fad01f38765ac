#ifndef CAP_EXECREQ_H
#define CAP_EXECREQ_H

#include "errcode.h"

#include <stddef.h>

/* The JSON body of POST /exec, parsed and validated.  Nothing in it ever
 * becomes an ffmpeg argument: keys name objects and the preset names one
 * of the server's own argument lists. */

enum cap_capability { CAP_CAP_FFMPEG_RENDER = 0, CAP_CAP_FFPROBE = 1 };

/* NULL-terminated list of capability names, indexed by enum cap_capability. */
extern const char *const cap_execreq_capabilities[];

#define CAP_PRESET_NAME_MAX     64
#define CAP_IDEMPOTENCY_KEY_MAX 255
#define CAP_OUTPUT_PREFIX_MAX   960

/* The job events a callback may ask for, one bit each; names in
 * cap_execreq_events (indexed by bit number), sent as "job.<name>". */
enum cap_cb_event {
  CAP_CB_STARTED = 1u << 0,
  CAP_CB_PROGRESS = 1u << 1,
  CAP_CB_SUCCEEDED = 1u << 2,
  CAP_CB_FAILED = 1u << 3,
  CAP_CB_CANCELED = 1u << 4,
};
#define CAP_CB_DEFAULT (CAP_CB_SUCCEEDED | CAP_CB_FAILED | CAP_CB_CANCELED)
#define CAP_CB_NEVENTS 5
/* NULL-terminated: "started", "progress", "succeeded", "failed", "canceled". */
extern const char *const cap_execreq_events[];

struct cap_execreq {
  enum cap_capability capability;
  char *input_key;
  char *output_key;    /* NULL for ffprobe and for a multi-output preset. */
  char *output_prefix; /* A multi-output preset's prefix, ending in '/'; else NULL. */
  char *preset;        /* NULL for ffprobe. */
  int wait_s;          /* -1 when not given. */
  int async;
  char *idempotency_key;    /* NULL when not given. */
  char *callback_url;       /* NULL when not given; the policy is checked by the caller. */
  unsigned callback_events; /* CAP_CB_* bits; 0 without callback_url. */
};

/* Parses body into r.  Returns 0, or -EINVAL with the API error in *code
 * (CAP_E_INVALID_JSON, CAP_E_MISSING_FIELD, ...) and a message naming the
 * field in msg.  r owns its strings either way; free with cap_execreq_free. */
int cap_execreq_parse(struct cap_execreq *r, const char *body, size_t len, enum cap_err *code,
                      char *msg, size_t msglen);
void cap_execreq_free(struct cap_execreq *r);
/* Writes the events of mask as a comma-separated list ("succeeded,failed")
 * into out, in cap_execreq_events order (empty for 0). */
void cap_execreq_events_format(unsigned mask, char *out, size_t outlen);
/* Reads such a list back; unknown names are skipped.  Returns the mask. */
unsigned cap_execreq_events_parse(const char *list);

#endif
