/* The error table (src/common/errcode.def) and its lookups, and the
 * table's agreement with docs/API.md: the "Status codes and error codes"
 * table there must list exactly the (status, code) pairs of errcode.def,
 * and every "`NNN code`" mentioned elsewhere in API.md must be one of them.
 *
 * The path of API.md is argv[1], else $CAP_API_MD, else docs/API.md of the
 * source tree this file was compiled from. */
#include "errcode.h"

#include "check.h"
#include "storerr.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DOC_CODES 256
#define CODE_MAX      64

struct doc_code {
  int status;
  char code[CODE_MAX];
  int line;
};

static int valid_code_string(const char *s) {
  if (s == NULL || *s == '\0')
    return 0;
  for (; *s; s++)
    if (!((*s >= 'a' && *s <= 'z') || *s == '_'))
      return 0;
  return 1;
}

/* The value whose code string is code, or CAP_E_NONE: the server never
 * turns a string back into an error, only this test (reading API.md). */
static enum cap_err from_code(const char *code) {
  for (int e = CAP_E_NONE + 1; code && e < CAP_E_COUNT; e++)
    if (strcmp(cap_err_code((enum cap_err)e), code) == 0)
      return (enum cap_err)e;
  return CAP_E_NONE;
}

static void test_lookups(void) {
  CHECK_EQ_STR(cap_err_code(CAP_E_UNAUTHORIZED), "unauthorized");
  CHECK_EQ_INT(cap_err_status(CAP_E_UNAUTHORIZED), 401);
  CHECK_EQ_STR(cap_err_message(CAP_E_UNAUTHORIZED), "Unauthorized");
  CHECK_EQ_STR(cap_err_code(CAP_E_QUEUE_FULL), "queue_full");
  CHECK_EQ_INT(cap_err_status(CAP_E_QUEUE_FULL), 429);
  CHECK_EQ_INT(cap_err_status(CAP_E_TIMEOUT), 504);

  /* CAP_E_NONE and values out of range name no error. */
  CHECK(cap_err_code(CAP_E_NONE) == NULL);
  CHECK_EQ_INT(cap_err_status(CAP_E_NONE), 0);
  CHECK(cap_err_message(CAP_E_NONE) == NULL);
  CHECK(cap_err_code(CAP_E_COUNT) == NULL);
  CHECK(cap_err_code((enum cap_err) - 1) == NULL);
  CHECK_EQ_INT(cap_err_status((enum cap_err)(CAP_E_COUNT + 5)), 0);

  CHECK_EQ_INT(from_code(NULL), CAP_E_NONE);
  CHECK_EQ_INT(from_code(""), CAP_E_NONE);
  CHECK_EQ_INT(from_code("no_such_code"), CAP_E_NONE);
  CHECK_EQ_INT(from_code("Unauthorized"), CAP_E_NONE);
  CHECK_EQ_INT(from_code("unauthorized"), CAP_E_UNAUTHORIZED);
}

/* Every row: a code of [a-z_], unique, an error status, a message, and the
 * string lookup finds it again. */
static void test_rows(void) {
  int bad = 0;
  for (int e = CAP_E_NONE + 1; e < CAP_E_COUNT; e++) {
    const char *code = cap_err_code((enum cap_err)e);
    int status = cap_err_status((enum cap_err)e);
    const char *msg = cap_err_message((enum cap_err)e);
    if (!valid_code_string(code) || status < 400 || status > 599 || msg == NULL || !msg[0] ||
        from_code(code) != (enum cap_err)e) {
      fprintf(stderr, "errcode.def row %d (%s) is not sane\n", e, code ? code : "NULL");
      bad++;
    }
  }
  CHECK_EQ_INT(bad, 0);
}

/* The errors jobs/ gives a job or a parse failure (job.c, execreq.c, and
 * storerr.c for a storage failure) are rows of the table with the status
 * clients have always been given for them: api/ answers with the row. */
static void test_jobs_boundary(void) {
  static const struct {
    enum cap_err e;
    const char *code;
    int status;
  } produced[] = {
      {CAP_E_INVALID_JSON, "invalid_json", 400},
      {CAP_E_UNKNOWN_FIELD, "unknown_field", 400},
      {CAP_E_MISSING_FIELD, "missing_field", 400},
      {CAP_E_INVALID_FIELD, "invalid_field", 400},
      {CAP_E_INVALID_KEY, "invalid_key", 400},
      {CAP_E_UNKNOWN_CAPABILITY, "unknown_capability", 400},
      {CAP_E_INPUT_NOT_FOUND, "input_not_found", 404},
      {CAP_E_CANCELED, "canceled", 409},
      {CAP_E_INPUT_TOO_LARGE, "input_too_large", 413},
      {CAP_E_INPUT_FORMAT_REFUSED, "input_format_refused", 422},
      {CAP_E_INTERNAL, "internal", 500},
      {CAP_E_FFMPEG_FAILED, "ffmpeg_failed", 502},
      {CAP_E_STORAGE_ERROR, "storage_error", 502},
      {CAP_E_STORAGE_DENIED, "storage_denied", 502},
      {CAP_E_TIMEOUT, "timeout", 504},
  };
  for (size_t i = 0; i < sizeof(produced) / sizeof(produced[0]); i++) {
    if (!CHECK_EQ_STR(cap_err_code(produced[i].e), produced[i].code))
      fprintf(stderr, "  jobs/ gives %s for \"%s\"\n", cap_err_code(produced[i].e),
              produced[i].code);
    CHECK_EQ_INT(cap_err_status(produced[i].e), produced[i].status);
  }

  /* Every typed storage error, on either side, lands on one of those rows. */
  static const struct {
    enum cap_storage_errc code;
    enum cap_storage_side side;
    enum cap_err want;
  } mapped[] = {
      {CAP_STORAGE_OK, CAP_STORAGE_INPUT, CAP_E_NONE},
      {CAP_STORAGE_E_NOT_FOUND, CAP_STORAGE_INPUT, CAP_E_INPUT_NOT_FOUND},
      {CAP_STORAGE_E_NOT_FOUND, CAP_STORAGE_OUTPUT, CAP_E_STORAGE_ERROR},
      {CAP_STORAGE_E_TOO_LARGE, CAP_STORAGE_INPUT, CAP_E_INPUT_TOO_LARGE},
      {CAP_STORAGE_E_TOO_LARGE, CAP_STORAGE_OUTPUT, CAP_E_STORAGE_ERROR},
      {CAP_STORAGE_E_DENIED, CAP_STORAGE_INPUT, CAP_E_STORAGE_DENIED},
      {CAP_STORAGE_E_DENIED, CAP_STORAGE_OUTPUT, CAP_E_STORAGE_DENIED},
      {CAP_STORAGE_E_UNAVAILABLE, CAP_STORAGE_INPUT, CAP_E_STORAGE_ERROR},
      {CAP_STORAGE_E_LOCAL, CAP_STORAGE_OUTPUT, CAP_E_STORAGE_ERROR},
      {CAP_STORAGE_E_CANCELED, CAP_STORAGE_OUTPUT, CAP_E_CANCELED},
      {CAP_STORAGE_E_FAILED, CAP_STORAGE_OUTPUT, CAP_E_STORAGE_ERROR},
  };
  for (size_t i = 0; i < sizeof(mapped) / sizeof(mapped[0]); i++) {
    struct cap_storage_err err = {.code = mapped[i].code, .side = mapped[i].side};
    if (!CHECK_EQ_INT(cap_storerr_err(&err), mapped[i].want))
      fprintf(stderr, "  storage %s on side %d\n", cap_storage_errc_name(mapped[i].code),
              (int)mapped[i].side);
  }
}

static char *read_file(const char *path) {
  FILE *f = fopen(path, "rb");
  if (f == NULL)
    return NULL;
  size_t cap = 1 << 16, len = 0;
  char *s = malloc(cap);
  size_t n;
  while (s && (n = fread(s + len, 1, cap - len - 1, f)) > 0) {
    len += n;
    if (len + 1 == cap)
      s = realloc(s, cap *= 2);
  }
  fclose(f);
  if (s)
    s[len] = '\0';
  return s;
}

/* Copies the cell that starts at *p (after a '|') up to the next '|',
 * trimmed, into out, and moves *p past that '|'.  Returns 0, or -1 when
 * the line ends first. */
static int next_cell(const char **p, char *out, size_t outlen) {
  const char *s = *p, *end = strchr(s, '|');
  if (end == NULL)
    return -1;
  *p = end + 1;
  while (s < end && isspace((unsigned char)*s))
    s++;
  while (end > s && isspace((unsigned char)end[-1]))
    end--;
  size_t n = (size_t)(end - s) < outlen - 1 ? (size_t)(end - s) : outlen - 1;
  memcpy(out, s, n);
  out[n] = '\0';
  return 0;
}

/* Parses one row of the status table into d.  Returns 1 for a row with a
 * code, 0 for a row without one (header, separator, 200, 202), -1 for a
 * row whose status or code cell cannot be read. */
static int parse_row(const char *line, struct doc_code *d) {
  char status[32], code[CODE_MAX + 8];
  const char *p = line + 1;
  if (next_cell(&p, status, sizeof(status)) != 0 || next_cell(&p, code, sizeof(code)) != 0)
    return -1;
  if (!(strlen(status) == 3 && isdigit((unsigned char)status[0]) &&
        isdigit((unsigned char)status[1]) && isdigit((unsigned char)status[2])))
    return 0; /* The header row and the separator. */
  if (strcmp(code, "–") == 0 || strcmp(code, "-") == 0)
    return 0; /* A success status: no code. */
  size_t n = strlen(code);
  if (n < 3 || code[0] != '`' || code[n - 1] != '`' || n - 2 >= CODE_MAX)
    return -1;
  memcpy(d->code, code + 1, n - 2);
  d->code[n - 2] = '\0';
  d->status = atoi(status);
  return valid_code_string(d->code) ? 1 : -1;
}

/* Reads the rows of the section "Status codes and error codes".  Returns
 * how many were found, or -1 (after a message) when the section or one of
 * its rows cannot be read. */
static int parse_table(const char *doc, struct doc_code *out, int max) {
  static const char heading[] = "\n## Status codes and error codes\n";
  const char *s = strstr(doc, heading);
  int n = 0, lineno = 1;
  if (s == NULL) {
    fprintf(stderr, "API.md has no section \"## Status codes and error codes\"\n");
    return -1;
  }
  for (const char *c = doc; c < s + 1; c++)
    lineno += *c == '\n';
  s += sizeof(heading) - 1;
  for (lineno++; *s && strncmp(s, "## ", 3) != 0; lineno++) {
    const char *eol = strchr(s, '\n');
    size_t len = eol ? (size_t)(eol - s) : strlen(s);
    char line[4096];
    if (len >= sizeof(line))
      len = sizeof(line) - 1;
    memcpy(line, s, len);
    line[len] = '\0';
    s = eol ? eol + 1 : s + len;
    if (line[0] != '|')
      continue;
    if (n == max) {
      fprintf(stderr, "API.md:%d: more than %d codes\n", lineno, max);
      return -1;
    }
    int rc = parse_row(line, &out[n]);
    if (rc < 0) {
      fprintf(stderr, "API.md:%d: cannot read the status or the `code` of: %s\n", lineno, line);
      return -1;
    }
    if (rc == 1)
      out[n++].line = lineno;
  }
  return n;
}

static void test_docs_table(const char *doc) {
  struct doc_code d[MAX_DOC_CODES];
  int n = parse_table(doc, d, MAX_DOC_CODES);
  if (!CHECK(n > 0))
    return;

  /* API.md → errcode.def: each documented code once, with the table's status. */
  for (int i = 0; i < n; i++) {
    /* errcode.def gives a code one status, so the docs list it once. */
    int first = i;
    for (int k = 0; k < i && first == i; k++)
      if (strcmp(d[k].code, d[i].code) == 0)
        first = k;
    if (!CHECK(first == i))
      fprintf(stderr, "  API.md:%d: %s is listed again (first at line %d): a code has one status\n",
              d[i].line, d[i].code, d[first].line);
    enum cap_err e = from_code(d[i].code);
    if (!CHECK(e != CAP_E_NONE))
      fprintf(stderr, "  API.md:%d: %d %s is documented but not in src/common/errcode.def\n",
              d[i].line, d[i].status, d[i].code);
    else if (!CHECK(cap_err_status(e) == d[i].status))
      fprintf(stderr, "  API.md:%d: %s is %d in API.md but %d in src/common/errcode.def\n",
              d[i].line, d[i].code, d[i].status, cap_err_status(e));
  }
  /* errcode.def → API.md: each code of the table is documented. */
  for (int e = CAP_E_NONE + 1; e < CAP_E_COUNT; e++) {
    int found = 0;
    for (int i = 0; i < n && !found; i++)
      found = strcmp(d[i].code, cap_err_code((enum cap_err)e)) == 0;
    if (!CHECK(found))
      fprintf(stderr,
              "  %d %s is in src/common/errcode.def but not in API.md's \"Status codes and "
              "error codes\" table\n",
              cap_err_status((enum cap_err)e), cap_err_code((enum cap_err)e));
  }
  printf("API.md lists %d codes, errcode.def %d\n", n, CAP_E_COUNT - 1);
}

/* Each "`NNN code`" in the prose says a code's status: it must be the
 * table's. */
static void test_docs_mentions(const char *doc) {
  int mentions = 0, lineno = 1;
  for (const char *s = doc; *s; s++) {
    lineno += *s == '\n';
    if (!(s[0] == '`' && isdigit((unsigned char)s[1]) && isdigit((unsigned char)s[2]) &&
          isdigit((unsigned char)s[3]) && s[4] == ' '))
      continue;
    const char *c = s + 5, *end = c;
    while ((*end >= 'a' && *end <= 'z') || *end == '_')
      end++;
    if (*end != '`' || end == c || end - c >= CODE_MAX)
      continue;
    char code[CODE_MAX];
    memcpy(code, c, (size_t)(end - c));
    code[end - c] = '\0';
    int status = atoi(s + 1);
    enum cap_err e = from_code(code);
    mentions++;
    if (!CHECK(e != CAP_E_NONE && cap_err_status(e) == status))
      fprintf(stderr, "  API.md:%d: `%d %s` is not a row of src/common/errcode.def\n", lineno,
              status, code);
    s = end;
  }
  CHECK(mentions > 0);
}

static char *docs_path(int argc, char **argv) {
  if (argc > 1)
    return strdup(argv[1]);
  if (getenv("CAP_API_MD"))
    return strdup(getenv("CAP_API_MD"));
  /* This file is test/unit/test-errcode.c of the tree that holds docs/. */
  static const char self[] = "test/unit/test-errcode.c";
  const char *file = __FILE__;
  size_t n = strlen(file), k = sizeof(self) - 1;
  if (n < k || strcmp(file + n - k, self) != 0)
    return NULL;
  char *path = malloc(n - k + sizeof("docs/API.md"));
  memcpy(path, file, n - k);
  strcpy(path + n - k, "docs/API.md");
  return path;
}

int main(int argc, char **argv) {
  test_lookups();
  test_rows();
  test_jobs_boundary();

  char *path = docs_path(argc, argv);
  char *doc = path ? read_file(path) : NULL;
  if (CHECK(doc != NULL)) {
    test_docs_table(doc);
    test_docs_mentions(doc);
  } else {
    fprintf(stderr, "cannot read API.md (%s): pass its path as the argument\n",
            path ? path : "__FILE__ names no source tree");
  }
  free(doc);
  free(path);
  return check_report();
}
