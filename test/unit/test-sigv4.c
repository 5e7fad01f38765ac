#include "sigv4.h"

#include "check.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* The credentials and time of the S3 examples in AWS's "Authenticating
 * Requests: Using the Authorization Header (AWS Signature Version 4)"
 * pages (sig-v4-header-based-auth, "Examples: Signature Calculations"). */
static const struct cap_sigv4_creds s3_example_creds = {
    "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "us-east-1", "s3"};
#define S3_EXAMPLE_HOST  "examplebucket.s3.amazonaws.com"
#define S3_EXAMPLE_DATE  "20130524T000000Z"
#define S3_EXAMPLE_SCOPE "AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request"

/* The credentials and time of AWS's SigV4 test suite (2015 edition, as
 * kept in awslabs/aws-c-auth tests/aws-signing-test-suite/v4). */
static const struct cap_sigv4_creds suite_creds = {
    "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "us-east-1", "service"};
#define SUITE_HOST "example.amazonaws.com"
#define SUITE_DATE "20150830T123600Z"

static void check_encode(const char *in, size_t n, int keep_slash, const char *want) {
  struct cap_buf b;
  cap_buf_init(&b);
  cap_sigv4_uri_encode(&b, in, n, keep_slash);
  if (!CHECK_EQ_STR(b.data ? b.data : "", want))
    fprintf(stderr, "  (encoding \"%s\", keep_slash %d)\n", in, keep_slash);
  cap_buf_free(&b);
}

static void test_uri_encode(void) {
  check_encode("a b", 3, 1, "a%20b");
  check_encode("+", 1, 1, "%2B");
  check_encode("=", 1, 0, "%3D");
  check_encode("%", 1, 1, "%25");
  check_encode("%20", 3, 1, "%2520");
  check_encode("~", 1, 0, "~");
  check_encode("$", 1, 1, "%24");
  check_encode("!'()*", 5, 1, "%21%27%28%29%2A");
  check_encode("a?b#c&d", 7, 1, "a%3Fb%23c%26d");
  check_encode("\xc3\xa9", 2, 1, "%C3%A9"); /* é */
  check_encode("\xe1\x88\xb4", 3, 0, "%E1%88%B4");
  check_encode("/a/b c/", 7, 1, "/a/b%20c/");
  check_encode("/a/b c/", 7, 0, "%2Fa%2Fb%20c%2F");
  check_encode("//x//", 5, 1, "//x//"); /* S3 keeps empty segments as they are. */
  check_encode("a\0b", 3, 1, "a%00b");
  check_encode("", 0, 1, "");
  const char *unreserved = "-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
  check_encode(unreserved, strlen(unreserved), 0, unreserved);

  /* Every byte: itself when unreserved, else '%' and two uppercase hex digits. */
  int bad = 0;
  for (int c = 0; c < 256; c++) {
    char in = (char)c;
    struct cap_buf b;
    cap_buf_init(&b);
    cap_sigv4_uri_encode(&b, &in, 1, 0);
    int keep = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
               c == '-' || c == '.' || c == '_' || c == '~';
    char want[4];
    if (keep)
      snprintf(want, sizeof(want), "%c", c);
    else
      snprintf(want, sizeof(want), "%%%02X", c);
    if (b.len != strlen(want) || memcmp(b.data, want, b.len) != 0)
      bad++;
    cap_buf_free(&b);
  }
  CHECK_EQ_INT(bad, 0);

  /* The encoder appends, so a URL can be built piece by piece. */
  struct cap_buf b;
  cap_buf_init(&b);
  cap_buf_puts(&b, "https://h");
  cap_sigv4_uri_encode(&b, "/k 1", 4, 1);
  CHECK_EQ_STR(b.data, "https://h/k%201");
  cap_buf_free(&b);
}

static void test_sha256(void) {
  char hex[65];
  memset(hex, 'Z', sizeof(hex));
  cap_sigv4_sha256_hex("", 0, hex);
  CHECK_EQ_STR(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK_EQ_STR(hex, CAP_SIGV4_EMPTY_SHA256);
  /* FIPS 180-2 appendix B.1. */
  cap_sigv4_sha256_hex("abc", 3, hex);
  CHECK_EQ_STR(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  /* The PUT Object example's payload and its published x-amz-content-sha256. */
  cap_sigv4_sha256_hex("Welcome to Amazon S3.", 21, hex);
  CHECK_EQ_STR(hex, "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072");
  /* The test suite's post-x-www-form-urlencoded body. */
  cap_sigv4_sha256_hex("Param1=value1", 13, hex);
  CHECK_EQ_STR(hex, "9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e");
}

static void check_query(const struct cap_sigv4_query *q, size_t nq, const char *want) {
  struct cap_buf b;
  cap_buf_init(&b);
  cap_sigv4_query_string(&b, q, nq);
  CHECK_EQ_STR(b.data ? b.data : "", want);
  cap_buf_free(&b);
}

static void check_url_query(const struct cap_sigv4_query *q, size_t nq, const char *want) {
  struct cap_buf b;
  cap_buf_init(&b);
  cap_sigv4_url_query(&b, q, nq);
  CHECK_EQ_STR(b.data ? b.data : "", want);
  cap_buf_free(&b);
}

/* The URL's query is the signed one except that an empty value is a bare
 * name, as the SDKs send "?uploads". */
static void test_url_query(void) {
  check_url_query(NULL, 0, "");
  const struct cap_sigv4_query uploads[] = {{"uploads", ""}};
  check_url_query(uploads, 1, "uploads");
  const struct cap_sigv4_query list[] = {{"prefix", "a b/"}, {"uploads", ""}};
  check_url_query(list, 2, "prefix=a%20b%2F&uploads");
  const struct cap_sigv4_query empty_prefix[] = {{"uploads", ""}, {"prefix", ""}};
  check_url_query(empty_prefix, 2, "prefix&uploads");
  const struct cap_sigv4_query part[] = {{"uploadId", "VXBsb2FkIElE+/="}, {"partNumber", "3"}};
  check_url_query(part, 2, "partNumber=3&uploadId=VXBsb2FkIElE%2B%2F%3D");
  /* Sorted as signed: by name, then value, an empty value first. */
  const struct cap_sigv4_query twice[] = {{"a", "1"}, {"a", ""}, {"A", ""}};
  check_url_query(twice, 3, "A&a&a=1");
}

static void test_query_string(void) {
  check_query(NULL, 0, "");
  const struct cap_sigv4_query uploads[] = {{"uploads", ""}};
  check_query(uploads, 1, "uploads=");
  /* UploadPart: partNumber sorts before uploadId whichever comes first,
   * and an upload id's '+', '/' and '=' are encoded. */
  const struct cap_sigv4_query part[] = {{"uploadId", "VXBsb2FkIElE+/="}, {"partNumber", "3"}};
  check_query(part, 2, "partNumber=3&uploadId=VXBsb2FkIElE%2B%2F%3D");
  const struct cap_sigv4_query list[] = {{"prefix", "J"}, {"max-keys", "2"}};
  check_query(list, 2, "max-keys=2&prefix=J");
  /* A space is %20, never '+'; '+' itself is %2B. */
  const struct cap_sigv4_query spaces[] = {{"prefix", "a b+c"}, {"key marker", "~x"}};
  check_query(spaces, 2, "key%20marker=~x&prefix=a%20b%2Bc");

  /* get-vanilla-query-order-key-case, as its query-signed canonical request
   * spells it (the '/' of the credential is encoded in a query). */
  const struct cap_sigv4_query key_case[] = {
      {"Param2", "value2"},
      {"Param1", "value1"},
      {"X-Amz-Algorithm", "AWS4-HMAC-SHA256"},
      {"X-Amz-Credential", "AKIDEXAMPLE/20150830/us-east-1/service/aws4_request"},
      {"X-Amz-Date", "20150830T123600Z"},
      {"X-Amz-SignedHeaders", "host"}};
  check_query(key_case, 6,
              "Param1=value1&Param2=value2&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential="
              "AKIDEXAMPLE%2F20150830%2Fus-east-1%2Fservice%2Faws4_request&X-Amz-Date="
              "20150830T123600Z&X-Amz-SignedHeaders=host");
  /* get-vanilla-query-order-encoded: sorted by encoded name, pair by pair. */
  const struct cap_sigv4_query encoded[] = {
      {"Param-3", "Value3"}, {"Param", "Value2"}, {"\xe1\x88\xb4", "Value1"}};
  check_query(encoded, 3, "%E1%88%B4=Value1&Param=Value2&Param-3=Value3");
  /* get-vanilla-query-order-value: one name twice sorts by value. */
  const struct cap_sigv4_query by_value[] = {{"Param1", "value2"}, {"Param1", "value1"}};
  check_query(by_value, 2, "Param1=value1&Param1=value2");
  /* get-vanilla-query-unreserved. */
  const char *u = "-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
  const struct cap_sigv4_query unreserved[] = {{u, u}};
  check_query(unreserved, 1,
              "-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz="
              "-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz");

  /* The builder appends after what the buffer holds. */
  struct cap_buf b;
  cap_buf_init(&b);
  cap_buf_puts(&b, "/k?");
  cap_sigv4_query_string(&b, uploads, 1);
  CHECK_EQ_STR(b.data, "/k?uploads=");
  cap_buf_free(&b);
}

static void test_amz_date(void) {
  char d[17];
  cap_sigv4_amz_date(1369353600, d);
  CHECK_EQ_STR(d, S3_EXAMPLE_DATE);
  cap_sigv4_amz_date(1710003942, d);
  CHECK_EQ_STR(d, "20240309T170542Z");
  cap_sigv4_amz_date(0, d);
  CHECK_EQ_STR(d, "19700101T000000Z");
  cap_sigv4_amz_date(2147483648, d); /* One second past 32-bit time_t. */
  CHECK_EQ_STR(d, "20380119T031408Z");
}

/* One signing case and the published results to compare with; NULL
 * expectations are not checked. */
struct sign_case {
  const char *name;
  const struct cap_sigv4_creds *creds;
  const char *method, *host, *path;
  const struct cap_sigv4_query *q;
  size_t nq;
  const struct cap_sigv4_header *h;
  size_t nh;
  const char *payload_hash, *amz_date;
  const char *want_creq, *want_sts, *want_auth, *want_sig;
};

static void check_sign(const struct sign_case *c) {
  struct cap_buf auth, creq, sts;
  cap_buf_init(&auth);
  cap_buf_init(&creq);
  cap_buf_init(&sts);
  int r = cap_sigv4_sign(c->creds, c->method, c->host, c->path, c->q, c->nq, c->h, c->nh,
                         c->payload_hash, c->amz_date, &auth, &creq, &sts);
  int ok = CHECK_EQ_INT(r, 0);
  if (ok && c->want_creq)
    ok &= CHECK_EQ_STR(creq.data, c->want_creq);
  if (ok && c->want_sts)
    ok &= CHECK_EQ_STR(sts.data, c->want_sts);
  if (ok && c->want_auth)
    ok &= CHECK_EQ_STR(auth.data, c->want_auth);
  if (ok && c->want_sig) {
    const char *sig = auth.data ? strstr(auth.data, ",Signature=") : NULL;
    ok &= CHECK(sig != NULL) && CHECK_EQ_STR(sig + 11, c->want_sig);
  }
  if (!ok)
    fprintf(stderr, "  (case %s)\n", c->name);
  cap_buf_free(&auth);
  cap_buf_free(&creq);
  cap_buf_free(&sts);
}

static void test_s3_examples(void) {
  /* Example: GET Object, the first 10 bytes of test.txt. */
  const struct cap_sigv4_header range[] = {{"Range", "bytes=0-9"}};
  const struct sign_case get_object = {
      "GET Object",
      &s3_example_creds,
      "GET",
      S3_EXAMPLE_HOST,
      "/test.txt",
      NULL,
      0,
      range,
      1,
      CAP_SIGV4_EMPTY_SHA256,
      S3_EXAMPLE_DATE,
      "GET\n"
      "/test.txt\n"
      "\n"
      "host:examplebucket.s3.amazonaws.com\n"
      "range:bytes=0-9\n"
      "x-amz-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n"
      "x-amz-date:20130524T000000Z\n"
      "\n"
      "host;range;x-amz-content-sha256;x-amz-date\n"
      "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
      "AWS4-HMAC-SHA256\n"
      "20130524T000000Z\n"
      "20130524/us-east-1/s3/aws4_request\n"
      "7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972",
      "AWS4-HMAC-SHA256 Credential=" S3_EXAMPLE_SCOPE
      ",SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,"
      "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41",
      "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"};
  check_sign(&get_object);

  /* Example: PUT Object, "Welcome to Amazon S3." as test$file.text with
   * reduced redundancy; the Date header is signed too. */
  char body_hash[65];
  cap_sigv4_sha256_hex("Welcome to Amazon S3.", 21, body_hash);
  const struct cap_sigv4_header put_headers[] = {{"Date", "Fri, 24 May 2013 00:00:00 GMT"},
                                                 {"x-amz-storage-class", "REDUCED_REDUNDANCY"}};
  const struct sign_case put_object = {
      "PUT Object",
      &s3_example_creds,
      "PUT",
      S3_EXAMPLE_HOST,
      "/test$file.text",
      NULL,
      0,
      put_headers,
      2,
      body_hash,
      S3_EXAMPLE_DATE,
      "PUT\n"
      "/test%24file.text\n"
      "\n"
      "date:Fri, 24 May 2013 00:00:00 GMT\n"
      "host:examplebucket.s3.amazonaws.com\n"
      "x-amz-content-sha256:44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072\n"
      "x-amz-date:20130524T000000Z\n"
      "x-amz-storage-class:REDUCED_REDUNDANCY\n"
      "\n"
      "date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class\n"
      "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072",
      "AWS4-HMAC-SHA256\n"
      "20130524T000000Z\n"
      "20130524/us-east-1/s3/aws4_request\n"
      "9e0e90d9c76de8fa5b200d8c849cd5b8dc7a3be3951ddb7f6a76b4158342019d",
      "AWS4-HMAC-SHA256 Credential=" S3_EXAMPLE_SCOPE
      ",SignedHeaders=date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class,"
      "Signature=98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd",
      "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd"};
  check_sign(&put_object);

  /* Example: GET Bucket Lifecycle ("GET ?lifecycle": an empty path is "/"). */
  const struct cap_sigv4_query lifecycle[] = {{"lifecycle", ""}};
  const struct sign_case get_lifecycle = {
      "GET Bucket Lifecycle",
      &s3_example_creds,
      "GET",
      S3_EXAMPLE_HOST,
      "",
      lifecycle,
      1,
      NULL,
      0,
      CAP_SIGV4_EMPTY_SHA256,
      S3_EXAMPLE_DATE,
      "GET\n"
      "/\n"
      "lifecycle=\n"
      "host:examplebucket.s3.amazonaws.com\n"
      "x-amz-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n"
      "x-amz-date:20130524T000000Z\n"
      "\n"
      "host;x-amz-content-sha256;x-amz-date\n"
      "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
      "AWS4-HMAC-SHA256\n"
      "20130524T000000Z\n"
      "20130524/us-east-1/s3/aws4_request\n"
      "9766c798316ff2757b517bc739a67f6213b4ab36dd5da2f94eaebf79c77395ca",
      "AWS4-HMAC-SHA256 Credential=" S3_EXAMPLE_SCOPE
      ",SignedHeaders=host;x-amz-content-sha256;x-amz-date,"
      "Signature=fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543",
      "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543"};
  check_sign(&get_lifecycle);

  /* Example: Get Bucket (List Objects), the query given out of order. */
  const struct cap_sigv4_query list[] = {{"prefix", "J"}, {"max-keys", "2"}};
  const struct sign_case list_objects = {
      "Get Bucket (List Objects)",
      &s3_example_creds,
      "GET",
      S3_EXAMPLE_HOST,
      "/",
      list,
      2,
      NULL,
      0,
      CAP_SIGV4_EMPTY_SHA256,
      S3_EXAMPLE_DATE,
      "GET\n"
      "/\n"
      "max-keys=2&prefix=J\n"
      "host:examplebucket.s3.amazonaws.com\n"
      "x-amz-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n"
      "x-amz-date:20130524T000000Z\n"
      "\n"
      "host;x-amz-content-sha256;x-amz-date\n"
      "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
      "AWS4-HMAC-SHA256\n"
      "20130524T000000Z\n"
      "20130524/us-east-1/s3/aws4_request\n"
      "df57d21db20da04d7fa30298dd4488ba3a2b47ca3a489c74750e0f1e7df1b9b7",
      "AWS4-HMAC-SHA256 Credential=" S3_EXAMPLE_SCOPE
      ",SignedHeaders=host;x-amz-content-sha256;x-amz-date,"
      "Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7",
      "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"};
  check_sign(&list_objects);
}

static void test_suite_vectors(void) {
  /* post-x-www-form-urlencoded and -parameters with "sign_body": the only
   * suite cases that sign x-amz-content-sha256 as every S3 request does.
   * Their path "/" reads the same with S3's single encoding. */
  char body_hash[65];
  cap_sigv4_sha256_hex("Param1=value1", 13, body_hash);
  const struct cap_sigv4_header form[] = {{"Content-Type", "application/x-www-form-urlencoded"},
                                          {"Content-Length", "13"}};
  const struct sign_case post_form = {
      "post-x-www-form-urlencoded",
      &suite_creds,
      "POST",
      SUITE_HOST,
      "/",
      NULL,
      0,
      form,
      2,
      body_hash,
      SUITE_DATE,
      "POST\n"
      "/\n"
      "\n"
      "content-length:13\n"
      "content-type:application/x-www-form-urlencoded\n"
      "host:example.amazonaws.com\n"
      "x-amz-content-sha256:9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e\n"
      "x-amz-date:20150830T123600Z\n"
      "\n"
      "content-length;content-type;host;x-amz-content-sha256;x-amz-date\n"
      "9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e",
      NULL,
      NULL,
      "d3875051da38690788ef43de4db0d8f280229d82040bfac253562e56c3f20e0b"};
  check_sign(&post_form);
  const struct cap_sigv4_header form_utf8[] = {
      {"Content-Type", "application/x-www-form-urlencoded; charset=utf-8"},
      {"Content-Length", "13"}};
  const struct sign_case post_form_params = {
      "post-x-www-form-urlencoded-parameters",
      &suite_creds,
      "POST",
      SUITE_HOST,
      "/",
      NULL,
      0,
      form_utf8,
      2,
      body_hash,
      SUITE_DATE,
      NULL,
      NULL,
      NULL,
      "328d1b9eaadca9f5818ef05e8392801e091653bafec24fcab71e7344e7f51422"};
  check_sign(&post_form_params);

  /* The other suite cases do not sign x-amz-content-sha256, so only the
   * parts of their canonical requests that S3 shares can be compared: the
   * canonical URI (get-utf8, get-space, get-unreserved, which the suite
   * encodes once) and the header lines (get-header-value-trim). */
  static const struct {
    const char *path, *want;
  } paths[] = {
      {"/\xe1\x88\xb4", "GET\n/%E1%88%B4\n\n"},
      {"/example space/", "GET\n/example%20space/\n\n"},
      {"/-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
       "GET\n/-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz\n\n"},
  };
  for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
    struct cap_buf auth, creq;
    cap_buf_init(&auth);
    cap_buf_init(&creq);
    CHECK_EQ_INT(cap_sigv4_sign(&suite_creds, "GET", SUITE_HOST, paths[i].path, NULL, 0, NULL, 0,
                                CAP_SIGV4_EMPTY_SHA256, SUITE_DATE, &auth, &creq, NULL),
                 0);
    CHECK_EQ_MEM(creq.data, strlen(paths[i].want), paths[i].want, strlen(paths[i].want));
    cap_buf_free(&auth);
    cap_buf_free(&creq);
  }

  const struct cap_sigv4_header trim[] = {{"My-Header1", " value1"},
                                          {"My-Header2", " \"a   b   c\""}};
  struct cap_buf auth, creq;
  cap_buf_init(&auth);
  cap_buf_init(&creq);
  CHECK_EQ_INT(cap_sigv4_sign(&suite_creds, "GET", SUITE_HOST, "/", NULL, 0, trim, 2,
                              CAP_SIGV4_EMPTY_SHA256, SUITE_DATE, &auth, &creq, NULL),
               0);
  CHECK(creq.data && strstr(creq.data, "\nhost:example.amazonaws.com\n"
                                       "my-header1:value1\n"
                                       "my-header2:\"a b c\"\n"
                                       "x-amz-content-sha256:") != NULL);
  CHECK(auth.data &&
        strstr(auth.data, ",SignedHeaders=host;my-header1;my-header2;x-amz-content-sha256;"
                          "x-amz-date,") != NULL);
  cap_buf_free(&auth);
  cap_buf_free(&creq);
}

/* R2-shaped requests (region auto, path style, a key with every awkward
 * character) signed here and by botocore 1.43.11's S3SigV4Auth, which
 * built the URL path with its own percent_encode(path, safe="/~"): an
 * independent implementation agreeing byte for byte. */
static const struct cap_sigv4_creds r2_creds = {"R2EXAMPLEACCESSKEY",
                                                "r2examplesecretkey/with+slash=", "auto", "s3"};
#define R2_HOST "0123456789abcdef.r2.cloudflarestorage.com"
#define R2_PATH "/media-bucket/dir/key with spaces+=%~\xc3\xa9\xe1\x88\xb4!$&'()*,;:@.mp4"
#define R2_CPATH                                                                                   \
  "/media-bucket/dir/key%20with%20spaces%2B%3D%25~%C3%A9%E1%88%B4%21%24%26%27%28%29%2A%2C%3B%3A%"  \
  "40.mp4"
#define R2_DATE "20240309T170542Z"

static void test_r2_botocore(void) {
  /* UploadPart of a streamed part: UNSIGNED-PAYLOAD. */
  const struct cap_sigv4_query part[] = {{"uploadId", "2~Abc+/=xyz"}, {"partNumber", "7"}};
  const struct cap_sigv4_header mp4[] = {{"Content-Type", "video/mp4"}};
  const struct sign_case upload_part = {
      "UploadPart",
      &r2_creds,
      "PUT",
      R2_HOST,
      R2_PATH,
      part,
      2,
      mp4,
      1,
      CAP_SIGV4_UNSIGNED_PAYLOAD,
      R2_DATE,
      "PUT\n" R2_CPATH "\n"
      "partNumber=7&uploadId=2~Abc%2B%2F%3Dxyz\n"
      "content-type:video/mp4\n"
      "host:" R2_HOST "\n"
      "x-amz-content-sha256:UNSIGNED-PAYLOAD\n"
      "x-amz-date:20240309T170542Z\n"
      "\n"
      "content-type;host;x-amz-content-sha256;x-amz-date\n"
      "UNSIGNED-PAYLOAD",
      "AWS4-HMAC-SHA256\n"
      "20240309T170542Z\n"
      "20240309/auto/s3/aws4_request\n"
      "b922dfd4e9ec8255a1fdc2e34b5956db77aa8fd0fb9c05435bed8a6d83051ac7",
      "AWS4-HMAC-SHA256 Credential=R2EXAMPLEACCESSKEY/20240309/auto/s3/aws4_request,"
      "SignedHeaders=content-type;host;x-amz-content-sha256;x-amz-date,"
      "Signature=98f6ec12f395ae484387042ae27bc00a27e1214767a1cba991b0767af65ca181",
      NULL};
  check_sign(&upload_part);

  /* CreateMultipartUpload: "?uploads". */
  const struct cap_sigv4_query uploads[] = {{"uploads", ""}};
  const struct sign_case create = {
      "CreateMultipartUpload",
      &r2_creds,
      "POST",
      R2_HOST,
      R2_PATH,
      uploads,
      1,
      NULL,
      0,
      CAP_SIGV4_EMPTY_SHA256,
      R2_DATE,
      NULL,
      "AWS4-HMAC-SHA256\n"
      "20240309T170542Z\n"
      "20240309/auto/s3/aws4_request\n"
      "5b38ddd0269c0948625761b1d64aebdd006e4b28ce43bac6b6c389bbfac0bd09",
      NULL,
      "ae70bc4bc5446f38aa00f6079886c43d941711710ae1fbb851c9fa19a6238790"};
  check_sign(&create);

  /* CreateMultipartUpload with the object's metadata, given content-type
   * first: signed sorted, cache-control before content-type, as botocore
   * signs it. */
  const struct cap_sigv4_header meta[] = {{"Content-Type", "video/mp4"},
                                          {"Cache-Control", "public, max-age=31536000, immutable"}};
  const struct sign_case create_meta = {
      "CreateMultipartUpload with Content-Type and Cache-Control",
      &r2_creds,
      "POST",
      R2_HOST,
      R2_PATH,
      uploads,
      1,
      meta,
      2,
      CAP_SIGV4_EMPTY_SHA256,
      R2_DATE,
      NULL,
      NULL,
      "AWS4-HMAC-SHA256 Credential=R2EXAMPLEACCESSKEY/20240309/auto/s3/aws4_request,"
      "SignedHeaders=cache-control;content-type;host;x-amz-content-sha256;x-amz-date,"
      "Signature=de6e8e60e129a7cea945d2d4490051a7ea6706f48a9f1b2f9c9967e8e41fdb14",
      NULL};
  check_sign(&create_meta);

  /* PutObject of a small body with its real hash, and a metadata header
   * whose blanks (a tab among them) collapse to single spaces. */
  const char *body = "{\"hello\": \"world\"}\n";
  char body_hash[65];
  cap_sigv4_sha256_hex(body, strlen(body), body_hash);
  CHECK_EQ_STR(body_hash, "44aff4ab2d7c3250525675a08f0cfa9591168cffe51791c5f5bbc417c15a6c38");
  const struct cap_sigv4_header put_headers[] = {{"X-Amz-Meta-Note", "  two   spaces\there  "},
                                                 {"Content-Type", "application/json"}};
  const struct sign_case put = {
      "PutObject",
      &r2_creds,
      "PUT",
      R2_HOST,
      R2_PATH,
      NULL,
      0,
      put_headers,
      2,
      body_hash,
      R2_DATE,
      "PUT\n" R2_CPATH "\n"
      "\n"
      "content-type:application/json\n"
      "host:" R2_HOST "\n"
      "x-amz-content-sha256:44aff4ab2d7c3250525675a08f0cfa9591168cffe51791c5f5bbc417c15a6c38\n"
      "x-amz-date:20240309T170542Z\n"
      "x-amz-meta-note:two spaces here\n"
      "\n"
      "content-type;host;x-amz-content-sha256;x-amz-date;x-amz-meta-note\n"
      "44aff4ab2d7c3250525675a08f0cfa9591168cffe51791c5f5bbc417c15a6c38",
      "AWS4-HMAC-SHA256\n"
      "20240309T170542Z\n"
      "20240309/auto/s3/aws4_request\n"
      "f98a10c0fdd692870295aecbaed63f815da32aabab2d0796fdd2a663ef5b393c",
      NULL,
      "55f913f3027e84415c0e2b2cece11c16af97a0494a6b9f9d346f836402066d54"};
  check_sign(&put);

  /* The URL built from the same helpers is exactly what was signed. */
  struct cap_buf url;
  cap_buf_init(&url);
  cap_buf_puts(&url, "https://" R2_HOST);
  cap_sigv4_uri_encode(&url, R2_PATH, strlen(R2_PATH), 1);
  cap_buf_putc(&url, '?');
  cap_sigv4_query_string(&url, part, 2);
  CHECK_EQ_STR(url.data, "https://" R2_HOST R2_CPATH "?partNumber=7&uploadId=2~Abc%2B%2F%3Dxyz");
  /* CreateMultipartUpload's URL is botocore's: "?uploads", no '='. */
  cap_buf_reset(&url);
  cap_buf_puts(&url, "https://" R2_HOST);
  cap_sigv4_uri_encode(&url, R2_PATH, strlen(R2_PATH), 1);
  cap_buf_putc(&url, '?');
  cap_sigv4_url_query(&url, uploads, 1);
  CHECK_EQ_STR(url.data, "https://" R2_HOST R2_CPATH "?uploads");
  cap_buf_free(&url);
}

static int sign_rc(const struct cap_sigv4_creds *c, const char *method, const char *host,
                   const char *path, const struct cap_sigv4_query *q, size_t nq,
                   const struct cap_sigv4_header *h, size_t nh, const char *payload_hash,
                   const char *amz_date) {
  struct cap_buf auth;
  cap_buf_init(&auth);
  cap_buf_puts(&auth, "untouched");
  int r = cap_sigv4_sign(c, method, host, path, q, nq, h, nh, payload_hash, amz_date, &auth, NULL,
                         NULL);
  /* A refused request leaves the output as it was. */
  if (r < 0)
    CHECK_EQ_STR(auth.data, "untouched");
  cap_buf_free(&auth);
  return r;
}

static void test_refusals(void) {
  const struct cap_sigv4_creds *c = &s3_example_creds;
  const char *e = CAP_SIGV4_EMPTY_SHA256, *d = S3_EXAMPLE_DATE, *host = S3_EXAMPLE_HOST;
  CHECK_EQ_INT(sign_rc(c, "GET", host, "/k", NULL, 0, NULL, 0, e, d), 0);
  CHECK_EQ_INT(sign_rc(c, "GET", host, "/k", NULL, 0, NULL, 0, CAP_SIGV4_UNSIGNED_PAYLOAD, d), 0);

  /* The three always-signed headers may not come again, in any case. */
  const struct cap_sigv4_header host_again[] = {{"Host", "other"}};
  CHECK_EQ_INT(sign_rc(c, "GET", host, "/k", NULL, 0, host_again, 1, e, d), -EINVAL);
  const struct cap_sigv4_header date_again[] = {{"X-Amz-Date", d}};
  CHECK_EQ_INT(sign_rc(c, "GET", host, "/k", NULL, 0, date_again, 1, e, d), -EINVAL);
  const struct cap_sigv4_header hash_again[] = {{"x-amz-content-SHA256", e}};
  CHECK_EQ_INT(sign_rc(c, "GET", host, "/k", NULL, 0, hash_again, 1, e, d), -EINVAL);
  const struct cap_sigv4_header twice[] = {{"Content-Type", "a"}, {"content-type", "a"}};
  CHECK_EQ_INT(sign_rc(c, "GET", host, "/k", NULL, 0, twice, 2, e, d), -EINVAL);
  /* Header lines cannot carry line breaks or odd names. */
  const struct cap_sigv4_header crlf[] = {{"X-Amz-Meta-A", "x\r\nInjected: 1"}};
  CHECK_EQ_INT(sign_rc(c, "GET", host, "/k", NULL, 0, crlf, 1, e, d), -EINVAL);
  const struct cap_sigv4_header colon[] = {{"X-A:b", "x"}};
  CHECK_EQ_INT(sign_rc(c, "GET", host, "/k", NULL, 0, colon, 1, e, d), -EINVAL);
  const struct cap_sigv4_header empty_name[] = {{"", "x"}};
  CHECK_EQ_INT(sign_rc(c, "GET", host, "/k", NULL, 0, empty_name, 1, e, d), -EINVAL);
  const struct cap_sigv4_header null_value[] = {{"X-A", NULL}};
  CHECK_EQ_INT(sign_rc(c, "GET", host, "/k", NULL, 0, null_value, 1, e, d), -EINVAL);

  /* Payload hashes: lowercase hex of the right length, or the literal. */
  CHECK_EQ_INT(sign_rc(c, "GET", host, "/k", NULL, 0, NULL, 0, NULL, d), -EINVAL);
  CHECK_EQ_INT(sign_rc(c, "GET", host, "/k", NULL, 0, NULL, 0, "", d), -EINVAL);
  CHECK_EQ_INT(sign_rc(c, "GET", host, "/k", NULL, 0, NULL, 0,
                       "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855", d),
               -EINVAL);
  CHECK_EQ_INT(sign_rc(c, "GET", host, "/k", NULL, 0, NULL, 0, "e3b0c442", d), -EINVAL);
  CHECK_EQ_INT(
      sign_rc(c, "GET", host, "/k", NULL, 0, NULL, 0, "STREAMING-AWS4-HMAC-SHA256-PAYLOAD", d),
      -EINVAL);

  /* Dates in exactly the amz form. */
  CHECK_EQ_INT(sign_rc(c, "GET", host, "/k", NULL, 0, NULL, 0, e, NULL), -EINVAL);
  CHECK_EQ_INT(sign_rc(c, "GET", host, "/k", NULL, 0, NULL, 0, e, "20130524"), -EINVAL);
  CHECK_EQ_INT(sign_rc(c, "GET", host, "/k", NULL, 0, NULL, 0, e, "20130524T000000"), -EINVAL);
  CHECK_EQ_INT(sign_rc(c, "GET", host, "/k", NULL, 0, NULL, 0, e, "2013-05-24T00:00Z"), -EINVAL);

  /* Method, host and path. */
  CHECK_EQ_INT(sign_rc(c, "", host, "/k", NULL, 0, NULL, 0, e, d), -EINVAL);
  CHECK_EQ_INT(sign_rc(c, "get", host, "/k", NULL, 0, NULL, 0, e, d), -EINVAL);
  CHECK_EQ_INT(sign_rc(c, "GET", "", "/k", NULL, 0, NULL, 0, e, d), -EINVAL);
  CHECK_EQ_INT(sign_rc(c, "GET", NULL, "/k", NULL, 0, NULL, 0, e, d), -EINVAL);
  CHECK_EQ_INT(sign_rc(c, "GET", host, "k", NULL, 0, NULL, 0, e, d), -EINVAL);
  const struct cap_sigv4_query null_value_q[] = {{"uploads", NULL}};
  CHECK_EQ_INT(sign_rc(c, "GET", host, "/k", null_value_q, 1, NULL, 0, e, d), -EINVAL);

  /* Credentials that cannot be written into the scope. */
  struct cap_sigv4_creds bad = *c;
  CHECK_EQ_INT(sign_rc(NULL, "GET", host, "/k", NULL, 0, NULL, 0, e, d), -EINVAL);
  bad.access_key = "";
  CHECK_EQ_INT(sign_rc(&bad, "GET", host, "/k", NULL, 0, NULL, 0, e, d), -EINVAL);
  bad = *c;
  bad.region = "us/east";
  CHECK_EQ_INT(sign_rc(&bad, "GET", host, "/k", NULL, 0, NULL, 0, e, d), -EINVAL);
  bad = *c;
  bad.service = NULL;
  CHECK_EQ_INT(sign_rc(&bad, "GET", host, "/k", NULL, 0, NULL, 0, e, d), -EINVAL);
  bad = *c;
  bad.secret_key = "";
  CHECK_EQ_INT(sign_rc(&bad, "GET", host, "/k", NULL, 0, NULL, 0, e, d), -EINVAL);
  bad = *c;
  bad.access_key = "AKIA,EXAMPLE";
  CHECK_EQ_INT(sign_rc(&bad, "GET", host, "/k", NULL, 0, NULL, 0, e, d), -EINVAL);
}

static void test_outputs(void) {
  /* The outputs replace what the buffers held, so a retry can sign into
   * the same buffers; the optional ones may be NULL. */
  struct cap_buf auth, creq;
  cap_buf_init(&auth);
  cap_buf_init(&creq);
  cap_buf_puts(&auth, "old");
  cap_buf_puts(&creq, "old");
  const struct cap_sigv4_query list[] = {{"prefix", "J"}, {"max-keys", "2"}};
  for (int i = 0; i < 2; i++) {
    CHECK_EQ_INT(cap_sigv4_sign(&s3_example_creds, "GET", S3_EXAMPLE_HOST, "/", list, 2, NULL, 0,
                                CAP_SIGV4_EMPTY_SHA256, S3_EXAMPLE_DATE, &auth, &creq, NULL),
                 0);
    CHECK(strncmp(auth.data, "AWS4-HMAC-SHA256 Credential=", 28) == 0);
    CHECK(strncmp(creq.data, "GET\n/\nmax-keys=2&prefix=J\n", 26) == 0);
  }
  CHECK_EQ_INT(cap_sigv4_sign(&s3_example_creds, "GET", S3_EXAMPLE_HOST, "/", list, 2, NULL, 0,
                              CAP_SIGV4_EMPTY_SHA256, S3_EXAMPLE_DATE, &auth, NULL, NULL),
               0);
  CHECK(strstr(auth.data, "Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef"
                          "69dc6f7") != NULL);

  /* A different secret, region or day gives a different signature. */
  struct cap_sigv4_creds other = s3_example_creds;
  other.secret_key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEZ";
  CHECK_EQ_INT(cap_sigv4_sign(&other, "GET", S3_EXAMPLE_HOST, "/", list, 2, NULL, 0,
                              CAP_SIGV4_EMPTY_SHA256, S3_EXAMPLE_DATE, &auth, NULL, NULL),
               0);
  CHECK(strstr(auth.data, "34b48302e7b5fa45") == NULL);
  other = s3_example_creds;
  other.region = "auto";
  CHECK_EQ_INT(cap_sigv4_sign(&other, "GET", S3_EXAMPLE_HOST, "/", list, 2, NULL, 0,
                              CAP_SIGV4_EMPTY_SHA256, S3_EXAMPLE_DATE, &auth, NULL, NULL),
               0);
  CHECK(strstr(auth.data, "/20130524/auto/s3/aws4_request,") != NULL);
  CHECK(strstr(auth.data, "34b48302e7b5fa45") == NULL);
  cap_buf_free(&auth);
  cap_buf_free(&creq);
}

int main(void) {
  test_uri_encode();
  test_sha256();
  test_query_string();
  test_url_query();
  test_amz_date();
  test_s3_examples();
  test_suite_vectors();
  test_r2_botocore();
  test_refusals();
  test_outputs();
  return check_report();
}
