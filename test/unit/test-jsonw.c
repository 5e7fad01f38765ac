#include "jsonw.h"

#include "check.h"

#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Returns cap_jsonw_str's output for n bytes at s; the caller frees it. */
static char *quote(const char *s, size_t n, size_t *outlen) {
  struct cap_buf b;
  cap_buf_init(&b);
  cap_jsonw_str(&b, s, n);
  if (outlen)
    *outlen = b.len;
  return cap_buf_steal(&b);
}

struct esc_case {
  const char *in;
  size_t n;
  const char *out; /* Expected output including the quotes. */
};

#define S(lit) lit, sizeof(lit) - 1

static const struct esc_case esc_cases[] = {
    {S(""), "\"\""},
    {S("plain text"), "\"plain text\""},
    {S("a\"b"), "\"a\\\"b\""},
    {S("\""), "\"\\\"\""},
    {S("back\\slash"), "\"back\\\\slash\""},
    {S("\\\\\""), "\"\\\\\\\\\\\"\""},
    {S("\n"), "\"\\u000a\""},
    {S("a\r\nb"), "\"a\\u000d\\u000ab\""},
    {S("\t"), "\"\\u0009\""},
    {S("\b\f"), "\"\\u0008\\u000c\""},
    {S("\x01"), "\"\\u0001\""},
    {S("\x1f"), "\"\\u001f\""},
    {S("\x00"), "\"\\u0000\""},
    {S("a\x00z"), "\"a\\u0000z\""},
    {S(" ~"), "\" ~\""}, /* 0x20 and 0x7e are plain. */
    {S("\x7f"), "\"\\u007f\""},
    {S("del\x7fhere"), "\"del\\u007fhere\""},
    {S("/"), "\"/\""},
    /* Valid multi-byte UTF-8 passes through untouched. */
    {S("\xc3\xa9"), "\"\xc3\xa9\""},                 /* U+00E9 */
    {S("\xc2\x80"), "\"\xc2\x80\""},                 /* U+0080 */
    {S("\xdf\xbf"), "\"\xdf\xbf\""},                 /* U+07FF */
    {S("\xe0\xa0\x80"), "\"\xe0\xa0\x80\""},         /* U+0800 */
    {S("\xe2\x82\xac"), "\"\xe2\x82\xac\""},         /* U+20AC */
    {S("\xed\x9f\xbf"), "\"\xed\x9f\xbf\""},         /* U+D7FF */
    {S("\xee\x80\x80"), "\"\xee\x80\x80\""},         /* U+E000 */
    {S("\xef\xbf\xbf"), "\"\xef\xbf\xbf\""},         /* U+FFFF */
    {S("\xf0\x90\x80\x80"), "\"\xf0\x90\x80\x80\""}, /* U+10000 */
    {S("\xf0\x9f\x98\x80"), "\"\xf0\x9f\x98\x80\""}, /* U+1F600 */
    {S("\xf4\x8f\xbf\xbf"), "\"\xf4\x8f\xbf\xbf\""}, /* U+10FFFF */
    {S("a\xc3\xa9\"\xe2\x82\xac"), "\"a\xc3\xa9\\\"\xe2\x82\xac\""},
    /* Invalid UTF-8: each bad byte becomes U+FFFD. */
    {S("\x80"), "\"\\ufffd\""},
    {S("\xbf"), "\"\\ufffd\""},
    {S("a\x80z"), "\"a\\ufffdz\""},
    {S("\xc0\x80"), "\"\\ufffd\\ufffd\""},                       /* overlong NUL */
    {S("\xc1\xbf"), "\"\\ufffd\\ufffd\""},                       /* overlong U+007F */
    {S("\xe0\x80\xaf"), "\"\\ufffd\\ufffd\\ufffd\""},            /* overlong '/' */
    {S("\xe0\x9f\xbf"), "\"\\ufffd\\ufffd\\ufffd\""},            /* overlong U+07FF */
    {S("\xf0\x8f\xbf\xbf"), "\"\\ufffd\\ufffd\\ufffd\\ufffd\""}, /* overlong U+FFFF */
    {S("\xed\xa0\x80"), "\"\\ufffd\\ufffd\\ufffd\""},            /* U+D800 */
    {S("\xed\xbf\xbf"), "\"\\ufffd\\ufffd\\ufffd\""},            /* U+DFFF */
    {S("\xf4\x90\x80\x80"), "\"\\ufffd\\ufffd\\ufffd\\ufffd\""}, /* U+110000 */
    {S("\xf5\x80\x80\x80"), "\"\\ufffd\\ufffd\\ufffd\\ufffd\""},
    {S("\xff"), "\"\\ufffd\""},
    {S("\xfe\xff"), "\"\\ufffd\\ufffd\""},
    {S("\xe2\x82"), "\"\\ufffd\\ufffd\""}, /* truncated at the end */
    {S("\xe2\x82z"), "\"\\ufffd\\ufffdz\""},
    {S("\xf0\x9f\x98"), "\"\\ufffd\\ufffd\\ufffd\""},
    {S("\xc3"), "\"\\ufffd\""},
    {S("\xc3\xc3\xa9"), "\"\\ufffd\xc3\xa9\""},
    {S("\xef\xbf\xbd"), "\"\xef\xbf\xbd\""}, /* U+FFFD itself is valid. */
};

static void test_escape_table(void) {
  for (size_t i = 0; i < sizeof(esc_cases) / sizeof(esc_cases[0]); i++) {
    const struct esc_case *c = &esc_cases[i];
    size_t n;
    char *out = quote(c->in, c->n, &n);
    if (!CHECK_EQ_MEM(out, n, c->out, strlen(c->out)))
      fprintf(stderr, "  (escape case %zu)\n", i);
    free(out);
  }
}

/* Appending goes after what the buffer already holds. */
static void test_appends(void) {
  struct cap_buf b;
  cap_buf_init(&b);
  cap_buf_puts(&b, "{\"k\":");
  cap_jsonw_str(&b, "v\"", 2);
  cap_buf_putc(&b, '}');
  CHECK_EQ_STR(b.data, "{\"k\":\"v\\\"\"}");
  cap_buf_free(&b);
}

/* Output parses with cJSON and gives back the input for valid UTF-8 without NUL. */
static void test_roundtrip(void) {
  static const char *const inputs[] = {
      "",
      "hello",
      "quote \" and backslash \\ and slash /",
      "line\nfeed\rcarriage\ttab\b\f",
      "\x01\x02\x03\x1e\x1f",
      "del \x7f",
      "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xf4\x8f\xbf\xbf",
      "\\u0041 is not an escape here",
      "}{][,:",
  };
  for (size_t i = 0; i < sizeof(inputs) / sizeof(inputs[0]); i++) {
    size_t n;
    char *out = quote(inputs[i], strlen(inputs[i]), &n);
    cJSON *j = cJSON_ParseWithLength(out, n);
    if (CHECK(cJSON_IsString(j)))
      CHECK_EQ_STR(cJSON_GetStringValue(j), inputs[i]);
    else
      fprintf(stderr, "  (round trip case %zu: %s)\n", i, out);
    cJSON_Delete(j);
    free(out);
  }
  /* Every byte from 1 to 127 in one string. */
  char all[128];
  for (int c = 1; c < 128; c++)
    all[c - 1] = (char)c;
  all[127] = '\0';
  size_t n;
  char *out = quote(all, 127, &n);
  cJSON *j = cJSON_ParseWithLength(out, n);
  if (CHECK(cJSON_IsString(j)))
    CHECK_EQ_STR(cJSON_GetStringValue(j), all);
  cJSON_Delete(j);
  /* The output itself has no raw control character. */
  int raw_ctl = 0;
  for (size_t k = 0; k < n; k++)
    if ((unsigned char)out[k] < 0x20 || (unsigned char)out[k] == 0x7f)
      raw_ctl++;
  CHECK_EQ_INT(raw_ctl, 0);
  free(out);
}

/* An independent decoder, to compare against on random input: returns the
 * length of the valid sequence at s or 0. */
static size_t ref_seq(const unsigned char *s, size_t n) {
  uint32_t cp;
  size_t len;
  if (s[0] < 0x80)
    return 1;
  if ((s[0] & 0xe0) == 0xc0) {
    cp = s[0] & 0x1f;
    len = 2;
  } else if ((s[0] & 0xf0) == 0xe0) {
    cp = s[0] & 0x0f;
    len = 3;
  } else if ((s[0] & 0xf8) == 0xf0) {
    cp = s[0] & 0x07;
    len = 4;
  } else {
    return 0;
  }
  if (n < len)
    return 0;
  for (size_t i = 1; i < len; i++) {
    if ((s[i] & 0xc0) != 0x80)
      return 0;
    cp = (cp << 6) | (s[i] & 0x3f);
  }
  static const uint32_t min[5] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < min[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
    return 0;
  return len;
}

static int ref_valid(const unsigned char *s, size_t n) {
  for (size_t i = 0; i < n;) {
    size_t k = ref_seq(s + i, n - i);
    if (k == 0)
      return 0;
    i += k;
  }
  return 1;
}

/* Expected cap_jsonw_str output, built with the reference decoder. */
static void ref_quote(struct cap_buf *b, const unsigned char *s, size_t n) {
  cap_buf_putc(b, '"');
  for (size_t i = 0; i < n;) {
    unsigned char c = s[i];
    if (c == '"' || c == '\\') {
      cap_buf_putc(b, '\\');
      cap_buf_putc(b, (char)c);
      i++;
    } else if (c < 0x20 || c == 0x7f) {
      cap_buf_printf(b, "\\u%04x", c);
      i++;
    } else {
      size_t k = ref_seq(s + i, n - i);
      if (k == 0) {
        cap_buf_puts(b, "\\ufffd");
        i++;
      } else {
        cap_buf_append(b, s + i, k);
        i += k;
      }
    }
  }
  cap_buf_putc(b, '"');
}

static void test_random_against_reference(void) {
  unsigned seed = 12345;
  unsigned char s[24];
  int mismatched_valid = 0, mismatched_str = 0, unparsable = 0;
  /* Bytes biased towards the interesting ones. */
  static const unsigned char pool[] = {'a',  '"',  '\\', 0x00, 0x1f, 0x7e, 0x80, 0xbf, 0xc0,
                                       0xc1, 0xc2, 0xdf, 0xe0, 0xed, 0xef, 0xa0, 0x9f, 0x90,
                                       0x8f, 0xf0, 0xf4, 0xf5, 0xff, 0x20, 0x0a};
  for (int iter = 0; iter < 50000; iter++) {
    size_t n = (size_t)(iter % 24);
    for (size_t i = 0; i < n; i++) {
      seed = seed * 1103515245u + 12345u;
      unsigned r = seed >> 16;
      s[i] = (r & 1) ? pool[(r >> 1) % sizeof(pool)] : (unsigned char)(r >> 3);
      /* DEL is left to the table above, so that one known difference
       * does not hide others here. */
      if (s[i] == 0x7f)
        s[i] = 'a';
    }
    if (cap_jsonw_utf8_valid((const char *)s, n) != ref_valid(s, n)) {
      if (mismatched_valid++ < 3) {
        fprintf(stderr, "utf8_valid differs from reference for ");
        check_print_mem_(s, n);
        fputc('\n', stderr);
      }
    }
    struct cap_buf want;
    size_t got_len;
    cap_buf_init(&want);
    ref_quote(&want, s, n);
    char *got = quote((const char *)s, n, &got_len);
    if (got_len != want.len || memcmp(got, want.data, got_len) != 0) {
      if (mismatched_str++ < 3) {
        fprintf(stderr, "jsonw_str differs from reference for ");
        check_print_mem_(s, n);
        fputs(": got ", stderr);
        check_print_mem_(got, got_len);
        fputs(" want ", stderr);
        check_print_mem_(want.data, want.len);
        fputc('\n', stderr);
      }
    }
    cJSON *j = cJSON_ParseWithLength(got, got_len);
    if (!cJSON_IsString(j) || !cap_jsonw_utf8_valid(got, got_len))
      unparsable++;
    cJSON_Delete(j);
    free(got);
    cap_buf_free(&want);
  }
  CHECK_EQ_INT(mismatched_valid, 0);
  CHECK_EQ_INT(mismatched_str, 0);
  CHECK_EQ_INT(unparsable, 0);
}

struct valid_case {
  const char *s;
  size_t n;
  int valid;
};

static const struct valid_case valid_cases[] = {
    {S(""), 1},
    {S("ascii"), 1},
    {S("\x00"), 1},
    {S("\x7f"), 1},
    {S("\xc2\x80"), 1},
    {S("\xdf\xbf"), 1},
    {S("\xe0\xa0\x80"), 1},
    {S("\xed\x9f\xbf"), 1},
    {S("\xee\x80\x80"), 1},
    {S("\xef\xbf\xbf"), 1},
    {S("\xf0\x90\x80\x80"), 1},
    {S("\xf4\x8f\xbf\xbf"), 1},
    {S("caf\xc3\xa9"), 1},
    {S("\x80"), 0},
    {S("\xbf"), 0},
    {S("\xc0\x80"), 0},
    {S("\xc1\xbf"), 0},
    {S("\xc2"), 0},
    {S("\xc2\x41"), 0},
    {S("\xc2\xc0"), 0},
    {S("\xe0\x80\x80"), 0},
    {S("\xe0\x9f\xbf"), 0},
    {S("\xe2\x82"), 0},
    {S("\xe2\x28\xa1"), 0},
    {S("\xed\xa0\x80"), 0},
    {S("\xed\xbf\xbf"), 0},
    {S("\xed\xa0\x80\xed\xb0\x80"), 0}, /* CESU-8 surrogate pair */
    {S("\xf0\x80\x80\x80"), 0},
    {S("\xf0\x8f\xbf\xbf"), 0},
    {S("\xf0\x9f\x98"), 0},
    {S("\xf4\x90\x80\x80"), 0},
    {S("\xf5\x80\x80\x80"), 0},
    {S("\xf8\x88\x80\x80\x80"), 0},
    {S("\xfc\x84\x80\x80\x80\x80"), 0},
    {S("\xfe"), 0},
    {S("\xff"), 0},
    {S("ok\xff"), 0},
};

static void test_utf8_valid_table(void) {
  for (size_t i = 0; i < sizeof(valid_cases) / sizeof(valid_cases[0]); i++) {
    const struct valid_case *c = &valid_cases[i];
    if (!CHECK_EQ_INT(cap_jsonw_utf8_valid(c->s, c->n), c->valid))
      fprintf(stderr, "  (utf8_valid case %zu)\n", i);
  }
  /* Length-bounded: the bytes after n do not count. */
  CHECK_EQ_INT(cap_jsonw_utf8_valid("ab\xff", 2), 1);
  CHECK_EQ_INT(cap_jsonw_utf8_valid("\xe2\x82\xac", 2), 0);
}

int main(void) {
  test_escape_table();
  test_appends();
  test_roundtrip();
  test_random_against_reference();
  test_utf8_valid_table();
  return check_report();
}
