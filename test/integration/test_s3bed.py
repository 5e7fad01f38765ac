"""The S3 test bed itself (scripts/s3-testbed.sh + s3bed.py): it verifies
SigV4 signatures and behaves like S3 where cap-server depends on it.  Two
independent clients check it: the real awscli v2 (/usr/bin/aws, payload
signed with its SHA-256 over http) and s3bed's own SigV4 signer (used with
UNSIGNED-PAYLOAD, as cap-server streams parts)."""
import datetime
import hashlib
import os
import shutil
import subprocess
import tempfile
import unittest
import xml.etree.ElementTree as ET

from s3bed import AWS, EMPTY_SHA256, SCRIPT, AwsError, S3Bed, sigv4_headers, uri_encode  # noqa: E402
from storagetools import have_bed  # noqa: E402

MIB = 1024 * 1024

# Keys whose bytes fall outside SigV4's unreserved set.
KEYS = [
    "plain.txt",
    "dir/with space.mp4",
    "unicodé/видео 📼.mkv",
    "a+b=c.txt",
    "100%/per%25cent.txt",
    "tilde~home/x~y.txt",
    "all/a b+c=d%e~f é😀.ts",
    "punct/&$@:,;!'()*[].txt",
    "double//slash/./x",
]


def md5_multipart(parts):
    return '"%s-%d"' % (hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest(),
                        len(parts))


def complete_xml(etags):
    body = "<CompleteMultipartUpload>%s</CompleteMultipartUpload>" % "".join(
        "<Part><PartNumber>%d</PartNumber><ETag>%s</ETag></Part>" % (i + 1, e)
        for i, e in enumerate(etags))
    return body.encode()


class OwnSignerVectors(unittest.TestCase):
    """s3bed's own signer against AWS's published S3 SigV4 examples
    (docs: sig-v4-header-based-auth, GET Object and PUT Object)."""
    AK, SK = "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    NOW = datetime.datetime(2013, 5, 24, tzinfo=datetime.timezone.utc)

    def test_get_object(self):
        h = sigv4_headers("GET", "examplebucket.s3.amazonaws.com", "/test.txt", [],
                          {"Range": "bytes=0-9"}, EMPTY_SHA256, self.AK, self.SK,
                          "us-east-1", now=self.NOW)
        self.assertEqual(h["authorization"],
                         "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/"
                         "aws4_request, SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
                         "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41")

    def test_put_object(self):
        body = b"Welcome to Amazon S3."
        h = sigv4_headers("PUT", "examplebucket.s3.amazonaws.com",
                          "/" + uri_encode("test$file.text", keep_slash=True), [],
                          {"Date": "Fri, 24 May 2013 00:00:00 GMT",
                           "x-amz-storage-class": "REDUCED_REDUNDANCY"},
                          hashlib.sha256(body).hexdigest(), self.AK, self.SK, "us-east-1",
                          now=self.NOW)
        self.assertTrue(h["authorization"].endswith(
            "SignedHeaders=date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class, "
            "Signature=98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd"),
            h["authorization"])

    def test_uri_encode(self):
        self.assertEqual(uri_encode("a b+c=d%e~f é/x", keep_slash=True),
                         "a%20b%2Bc%3Dd%25e~f%20%C3%A9/x")
        self.assertEqual(uri_encode("a/b"), "a%2Fb")


@unittest.skipUnless(have_bed(), "S3 bed not installed: scripts/s3-testbed.sh install")
class S3BedBehaviour(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.bed = S3Bed().start()
        cls.addClassCleanup(cls.bed.stop)
        cls.bucket = "capsrv-test"
        cls.bed.make_bucket(cls.bucket)
        cls.tmp = tempfile.mkdtemp(prefix="s3bed-test-")
        cls.addClassCleanup(shutil.rmtree, cls.tmp, True)

    def test_bucket_exists_and_bad_names_refused(self):
        r = self.bed.request("HEAD", self.bucket)
        self.assertEqual(r.status, 200)
        self.assertEqual(self.bed.request("HEAD", "no-such-bucket").status, 404)
        r = self.bed.request("GET", "no-such-bucket")
        self.assertEqual((r.status, r.code), (404, "NoSuchBucket"))
        # DNS-compliant names only, like S3 (3..63 characters)
        with self.assertRaises(AwsError) as cm:
            self.bed.make_bucket("b1")
        self.assertEqual(cm.exception.code, "InvalidBucketName")

    def test_round_trip_keys(self):
        for i, key in enumerate(KEYS):
            with self.subTest(key=key):
                body = os.urandom(1000 + i)
                # awscli up (payload hash signed), own signer down (unsigned)
                out = self.bed.put_object(self.bucket, key, body=body)
                self.assertEqual(out["ETag"], '"%s"' % hashlib.md5(body).hexdigest())
                r = self.bed.request("GET", self.bucket, key, payload="unsigned")
                self.assertEqual(r.status, 200, r)
                self.assertEqual(r.body, body)
                # own signer up (unsigned or hashed), awscli down
                mode = ("unsigned", "hash")[i % 2]
                body2 = os.urandom(500 + i) + mode.encode()
                r = self.bed.request("PUT", self.bucket, key, body=body2, payload=mode)
                self.assertEqual(r.status, 200, r)
                self.assertEqual(r.headers["etag"], '"%s"' % hashlib.md5(body2).hexdigest())
                path = os.path.join(self.tmp, "got-%d" % i)
                info = self.bed.get_object(self.bucket, key, path)
                self.assertEqual(info["ContentLength"], len(body2))
                with open(path, "rb") as f:
                    self.assertEqual(f.read(), body2)
                r = self.bed.request("HEAD", self.bucket, key)
                self.assertEqual(r.headers.get("content-length"), str(len(body2)))
        listed = {o["Key"] for o in self.bed.list_objects(self.bucket)}
        self.assertTrue(set(KEYS) <= listed, set(KEYS) - listed)

    def test_missing_key(self):
        r = self.bed.request("GET", self.bucket, "no/such key")
        self.assertEqual((r.status, r.code), (404, "NoSuchKey"))
        with self.assertRaises(AwsError) as cm:
            self.bed.head_object(self.bucket, "no/such key")
        self.assertEqual(cm.exception.code, "404")  # HEAD: no body, no code

    def test_wrong_secret_is_refused(self):
        with self.assertRaises(AwsError) as cm:
            self.bed.aws("s3api", "list-objects-v2", "--bucket", self.bucket, secret="wrong")
        self.assertEqual(cm.exception.code, "SignatureDoesNotMatch")
        with self.assertRaises(AwsError) as cm:
            self.bed.aws("s3api", "head-bucket", "--bucket", self.bucket, secret="wrong")
        self.assertEqual(cm.exception.code, "403")
        r = self.bed.request("PUT", self.bucket, "denied.txt", body=b"x", secret="wrong",
                             payload="unsigned")
        self.assertEqual((r.status, r.code), (403, "SignatureDoesNotMatch"))
        # the error document carries the server's canonical request
        self.assertIn(b"<CanonicalRequest>PUT\n/capsrv-test/denied.txt", r.body)
        # an unknown access key looks the same as a wrong secret here
        r = self.bed.request("GET", self.bucket, access_key="nobody:none")
        self.assertEqual((r.status, r.code), (403, "SignatureDoesNotMatch"))
        r = self.bed.request("HEAD", self.bucket, secret="wrong")
        self.assertEqual(r.status, 403)
        self.assertEqual(self.bed.request("GET", self.bucket, "denied.txt").status, 404)

    def test_payload_hash_modes(self):
        body = b"payload modes\n" * 100
        r = self.bed.request("PUT", self.bucket, "modes/unsigned", body=body, payload="unsigned")
        self.assertEqual(r.status, 200, r)
        r = self.bed.request("PUT", self.bucket, "modes/hashed", body=body, payload="hash")
        self.assertEqual(r.status, 200, r)
        # a real hash that does not match the body: the body is checked
        r = self.bed.request("PUT", self.bucket, "modes/bad", body=body,
                             payload=hashlib.sha256(b"other").hexdigest())
        self.assertEqual((r.status, r.code), (400, "BadDigest"), r)
        self.assertEqual(self.bed.request("HEAD", self.bucket, "modes/bad").status, 404)
        # aws-chunked streaming signatures are refused (as R2 does)
        r = self.bed.request("PUT", self.bucket, "modes/chunked", body=body,
                             payload="STREAMING-AWS4-HMAC-SHA256-PAYLOAD")
        self.assertEqual((r.status, r.code), (501, "NotImplemented"), r)
        # a clock far off is refused
        r = self.bed.request("GET", self.bucket, "modes/unsigned",
                             now=datetime.datetime.now(datetime.timezone.utc)
                             - datetime.timedelta(minutes=20))
        self.assertEqual((r.status, r.code), (403, "RequestTimeTooSkewed"), r)

    def test_payload_hash_header_required(self):
        # curl 7.88 --aws-sigv4 sends no x-amz-content-sha256: refused here
        url = "%s/%s?list-type=2" % (self.bed.endpoint, self.bucket)
        out = subprocess.run(["curl", "-s", "-w", "\n%{http_code}", "--aws-sigv4", "aws:amz:auto:s3",
                              "--user", "%s:%s" % (self.bed.access_key, self.bed.secret_key), url],
                             capture_output=True, text=True, timeout=30).stdout
        self.assertTrue(out.endswith("\n400"), out)
        self.assertIn("<Code>InvalidRequest</Code>", out)
        self.assertIn("x-amz-content-sha256", out)

    def test_multipart_complete(self):
        key = "mp/complete é+=.bin"
        p1, p2 = os.urandom(5 * MIB), os.urandom(12345)
        up = self.bed.create_multipart_upload(self.bucket, key)
        e1 = self.bed.upload_part(self.bucket, key, up, 1, body=p1)
        e2 = self.bed.upload_part(self.bucket, key, up, 2, body=p2)
        self.assertEqual(e1, '"%s"' % hashlib.md5(p1).hexdigest())
        parts = self.bed.list_parts(self.bucket, key, up)
        self.assertEqual([(p["PartNumber"], p["Size"], p["ETag"]) for p in parts],
                         [(1, 5 * MIB, e1), (2, len(p2), e2)])
        self.assertIn(up, [u["UploadId"] for u in self.bed.list_multipart_uploads(self.bucket)])
        out = self.bed.complete_multipart_upload(self.bucket, key, up, [e1, e2])
        self.assertEqual(out["ETag"], md5_multipart([p1, p2]))
        head = self.bed.head_object(self.bucket, key)
        self.assertEqual(head["ContentLength"], len(p1) + len(p2))
        self.assertEqual(head["ETag"], md5_multipart([p1, p2]))
        self.assertEqual(self.bed.part_sizes(self.bucket, key), [5 * MIB, len(p2)])
        path = os.path.join(self.tmp, "mp-complete")
        self.bed.get_object(self.bucket, key, path)
        with open(path, "rb") as f:
            self.assertEqual(f.read(), p1 + p2)
        self.assertNotIn(up, [u["UploadId"] for u in self.bed.list_multipart_uploads(self.bucket)])
        # this Swift does not answer partNumber requests
        with self.assertRaises(AwsError) as cm:
            self.bed.head_object(self.bucket, key, part_number=1)
        self.assertEqual(cm.exception.code, "405")

    def test_multipart_unsigned_own_signer(self):
        # cap-server's path: UploadPart with UNSIGNED-PAYLOAD, Complete with
        # a hashed XML body, all signed by an independent implementation.
        key = "mp/own signer~%.ts"
        r = self.bed.request("POST", self.bucket, key, query=[("uploads", "")])
        self.assertEqual(r.status, 200, r)
        up = ET.fromstring(r.body).findtext("{http://s3.amazonaws.com/doc/2006-03-01/}UploadId")
        self.assertTrue(up)
        parts, etags = [os.urandom(5 * MIB), os.urandom(5 * MIB), os.urandom(777)], []
        for n, data in enumerate(parts, 1):
            r = self.bed.request("PUT", self.bucket, key, body=data, payload="unsigned",
                                 query={"partNumber": str(n), "uploadId": up})
            self.assertEqual(r.status, 200, r)
            etags.append(r.headers["etag"])
        r = self.bed.request("POST", self.bucket, key, query={"uploadId": up},
                             body=complete_xml(etags), headers={"content-type": "application/xml"})
        self.assertEqual(r.status, 200, r)
        etag = ET.fromstring(r.body).findtext("{http://s3.amazonaws.com/doc/2006-03-01/}ETag")
        self.assertEqual(etag, md5_multipart(parts))
        self.assertEqual(self.bed.part_sizes(self.bucket, key), [5 * MIB, 5 * MIB, 777])
        r = self.bed.request("GET", self.bucket, key, payload="unsigned")
        self.assertEqual(r.body, b"".join(parts))

    def test_multipart_small_part_is_too_small(self):
        key = "mp/too small"
        p1, p2 = os.urandom(5 * MIB - 1), os.urandom(100)
        up = self.bed.create_multipart_upload(self.bucket, key)
        e1 = self.bed.upload_part(self.bucket, key, up, 1, body=p1)
        e2 = self.bed.upload_part(self.bucket, key, up, 2, body=p2)
        with self.assertRaises(AwsError) as cm:
            self.bed.complete_multipart_upload(self.bucket, key, up, [e1, e2])
        self.assertEqual(cm.exception.code, "EntityTooSmall")
        # the upload is still open after the refusal; abort it
        self.assertIn(up, [u["UploadId"] for u in self.bed.list_multipart_uploads(self.bucket)])
        self.bed.abort_multipart_upload(self.bucket, key, up)
        self.assertEqual(self.bed.list_multipart_uploads(self.bucket, prefix=key), [])
        # a single part under 5 MiB is fine: it is the last one
        up = self.bed.create_multipart_upload(self.bucket, key)
        e1 = self.bed.upload_part(self.bucket, key, up, 1, body=p2)
        out = self.bed.complete_multipart_upload(self.bucket, key, up, [e1])
        self.assertEqual(out["ETag"], md5_multipart([p2]))

    def test_abort_and_list(self):
        prefix = "abort/"
        ups = {}
        for name in ("one", "two two"):
            key = prefix + name
            ups[key] = self.bed.create_multipart_upload(self.bucket, key)
        self.bed.upload_part(self.bucket, prefix + "one", ups[prefix + "one"], 1, body=b"x" * 1000)
        listed = self.bed.list_multipart_uploads(self.bucket, prefix=prefix)
        self.assertEqual(sorted((u["Key"], u["UploadId"]) for u in listed), sorted(ups.items()))
        for u in listed:
            self.assertIn("Initiated", u)
        self.assertEqual(len(self.bed.list_parts(self.bucket, prefix + "one", ups[prefix + "one"])), 1)
        for key, up in ups.items():
            self.bed.abort_multipart_upload(self.bucket, key, up)
        self.assertEqual(self.bed.list_multipart_uploads(self.bucket, prefix=prefix), [])
        with self.assertRaises(AwsError) as cm:
            self.bed.list_parts(self.bucket, prefix + "one", ups[prefix + "one"])
        self.assertEqual(cm.exception.code, "NoSuchUpload")
        # abort through the own signer too
        r = self.bed.request("POST", self.bucket, prefix + "three", query=[("uploads", "")])
        up = ET.fromstring(r.body).findtext("{http://s3.amazonaws.com/doc/2006-03-01/}UploadId")
        r = self.bed.request("DELETE", self.bucket, prefix + "three", query={"uploadId": up})
        self.assertEqual(r.status, 204, r)
        self.assertEqual(self.bed.list_multipart_uploads(self.bucket, prefix=prefix), [])
        r = self.bed.request("DELETE", self.bucket, prefix + "three", query={"uploadId": up})
        self.assertEqual((r.status, r.code), (404, "NoSuchUpload"))
        self.assertEqual([o["Key"] for o in self.bed.list_objects(self.bucket, prefix=prefix)], [])

    def test_region_mismatch(self):
        # Swift: 400 AuthorizationHeaderMalformed naming the expected region
        r = self.bed.request("GET", self.bucket, region="us-east-1")
        self.assertEqual((r.status, r.code), (400, "AuthorizationHeaderMalformed"), r)
        self.assertIn("the region 'us-east-1' is wrong; expecting 'auto'", r.message)
        self.assertIn(b"<Region>auto</Region>", r.body)
        r = self.bed.request("PUT", self.bucket, "region.txt", body=b"x", region="eu-west-1",
                             payload="unsigned")
        self.assertEqual((r.status, r.code), (400, "AuthorizationHeaderMalformed"), r)
        # awscli reads the expected region from that error, re-signs and
        # succeeds: it cannot show the mismatch (botocore's region redirector).
        out = self.bed.aws_json("s3api", "list-objects-v2", "--bucket", self.bucket,
                                region="us-east-1")
        self.assertIsInstance(out, dict)


@unittest.skipUnless(have_bed(), "S3 bed not installed: scripts/s3-testbed.sh install")
class S3BedLifecycle(unittest.TestCase):
    def pids(self, bed):
        out = []
        for name in ("proxy", "account", "container", "object", "memcached"):
            with open(os.path.join(bed.dir, "run", name + ".pid")) as f:
                out.append(int(f.read()))
        return out

    @staticmethod
    def alive(pid):
        try:
            with open("/proc/%d/stat" % pid) as f:
                return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
        except FileNotFoundError:
            return False

    def test_start_restart_stop(self):
        bed = S3Bed()
        with bed:
            self.assertLess(bed.start_seconds, 20)
            self.assertTrue(bed.running())
            pids = self.pids(bed)
            self.assertTrue(all(self.alive(p) for p in pids))
            # env lines for the process under test
            out = subprocess.run([SCRIPT, "env", bed.dir], capture_output=True, text=True,
                                 check=True).stdout
            self.assertEqual(out.splitlines(), [
                "export AWS_ENDPOINT_URL=%s" % bed.endpoint,
                "export AWS_ACCESS_KEY_ID=test:tester",
                "export AWS_SECRET_ACCESS_KEY=testing",
                "export AWS_REGION=auto"])
            # start again while running: nothing changes
            r = subprocess.run([SCRIPT, "start", bed.dir], capture_output=True, text=True)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn("already running", r.stdout)
            self.assertEqual(self.pids(bed), pids)
            # restart: same endpoint, objects and open uploads kept
            bed.make_bucket("restart")
            bed.put_object("restart", "kept.txt", body=b"kept")
            up = bed.create_multipart_upload("restart", "open upload")
            endpoint = bed.endpoint
            bed.restart()
            self.assertEqual(bed.endpoint, endpoint)
            self.assertTrue(all(not self.alive(p) for p in pids))
            r = bed.request("GET", "restart", "kept.txt")
            self.assertEqual((r.status, r.body), (200, b"kept"))
            self.assertEqual([u["UploadId"] for u in bed.list_multipart_uploads("restart")], [up])
            pids = self.pids(bed)
            # another bed cannot take a busy port
            other = tempfile.mkdtemp(prefix="s3bed-busy-")
            try:
                r = subprocess.run([SCRIPT, "start", other, str(bed.port)],
                                   capture_output=True, text=True)
                self.assertNotEqual(r.returncode, 0)
                self.assertIn("port %d is in use" % bed.port, r.stderr)
            finally:
                subprocess.run([SCRIPT, "stop", other], capture_output=True)
                shutil.rmtree(other, ignore_errors=True)
            d = bed.dir
        # stopped: every process gone, directory removed
        self.assertTrue(all(not self.alive(p) for p in pids), pids)
        self.assertFalse(os.path.exists(d))
        self.assertIsNone(bed.dir)


if __name__ == "__main__":
    unittest.main()
