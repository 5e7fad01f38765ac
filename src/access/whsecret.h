#ifndef CAP_WHSECRET_H
#define CAP_WHSECRET_H

#include <stddef.h>
#include <stdint.h>

/* Webhook signing secrets, per token name, as the Standard Webhooks
 * specification has them: "whsec_" followed by the base64 of the key.  A
 * token may hold two at once while its receivers move from one to the
 * other: every delivery then carries a signature by each. */

#define CAP_WHSECRET_NAME_MAX  64
#define CAP_WHSECRET_PER_TOKEN 2
/* The key sizes the specification allows (bytes, after base64). */
#define CAP_WHSECRET_KEY_MIN 24
#define CAP_WHSECRET_KEY_MAX 64
/* Room for the webhook-signature value: "v1," and 44 base64 characters
 * per secret, space-separated, and the NUL. */
#define CAP_WHSECRET_SIG_MAX (CAP_WHSECRET_PER_TOKEN * 48 + 1)

struct cap_whsecret_key {
  unsigned char k[CAP_WHSECRET_KEY_MAX];
  size_t n;
};

/* The secrets of one token. */
struct cap_whsecret_token {
  char name[CAP_WHSECRET_NAME_MAX + 1];
  struct cap_whsecret_key keys[CAP_WHSECRET_PER_TOKEN];
  int nkeys;
};

/* Every token's secrets (the webhook_secrets_file). */
struct cap_whsecret {
  struct cap_whsecret_token *v;
  size_t n;
};

void cap_whsecret_init(struct cap_whsecret *s);
/* Wipes and frees the secrets; s is empty afterwards. */
void cap_whsecret_free(struct cap_whsecret *s);
/* Adds the secrets of a file of "token-name:whsec_AAA [whsec_BBB]" lines
 * (blank lines and # comments are skipped) to s.  Sets *loose_mode when
 * the file is readable by group or others.  Returns 0, or a negative errno
 * with the reason in err (naming the line, never the secret); on failure s
 * is unchanged. */
int cap_whsecret_load_file(struct cap_whsecret *s, const char *path, int *loose_mode, char *err,
                           size_t errlen);
/* Moves the secrets of src into dst, wiping what dst held. */
void cap_whsecret_replace(struct cap_whsecret *dst, struct cap_whsecret *src);
/* Returns the secrets of the token called name (owned by s, valid until s
 * changes), or NULL when it has none.  NULL s or name: NULL. */
const struct cap_whsecret_token *cap_whsecret_find(const struct cap_whsecret *s, const char *name);
/* Writes the webhook-signature header value for one delivery into out:
 * "v1,<base64 HMAC-SHA256 over "<id>.<timestamp>.<body>">" for each of t's
 * secrets, space-separated.  Returns 0, or -ENOSPC when outlen is short of
 * CAP_WHSECRET_SIG_MAX, or -EIO when OpenSSL fails. */
int cap_whsecret_sign(const struct cap_whsecret_token *t, const char *id, int64_t timestamp,
                      const char *body, size_t len, char *out, size_t outlen);

#endif
