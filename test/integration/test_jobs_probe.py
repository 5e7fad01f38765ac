#!/usr/bin/env python3
"""Integration tests (jobs): the ffprobe capability against ffprobe run
directly, the seed's bodies, missing inputs (404 before any child starts),
hostile keys, symlinks inside the store, unicode keys and per-token key
prefixes."""
import json
import os
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import mediatools as mt  # noqa: E402
from capsrv import TOKEN, Server  # noqa: E402
from captools import PROBE_BODY, SEED_BODY, write_file  # noqa: E402

HOSTILE_KEYS = [
    "../etc/passwd",
    "../../../../../../etc/passwd",
    "uploads/../../etc/passwd",
    "uploads/../../../x.mp4",
    "uploads/..",
    "..",
    ".",
    "./uploads/clip.mp4",
    "uploads/./clip.mp4",
    "/etc/passwd",
    "/uploads/clip.mp4",
    "uploads//clip.mp4",
    "uploads/",
    "uploads/clip.mp4/",
    ".cap-tmp/x.mp4",
    ".cap-tmp",
    ".cap-tmp/../uploads/clip.mp4",
    "uploads/\u0007bell.mp4",
    "uploads/tab\t.mp4",
    "uploads/new\nline.mp4",
    "uploads/\u007fdel.mp4",
]


def started_count(srv):
    return len(mt.job_started_lines(srv))


class Probe(mt.CleanCheckMixin, unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = mt.start()
        cls.data = mt.data_dir(cls.srv)
        mt.put(cls.srv, "uploads/clip.mp4", mt.clip(1.0, "320x240"))
        mt.put(cls.srv, "uploads/raw.mp4", mt.clip(1.0, "320x240"))
        mt.put(cls.srv, "uploads/silent.mp4", mt.clip(1.0, "160x120", audio=False))
        cls.outside = tempfile.mkdtemp(prefix="capsrv-outside-")
        import shutil
        shutil.copyfile(mt.clip(1.0, "320x240"), os.path.join(cls.outside, "clip.mp4"))

    def probe_ok(self, key):
        st, h, j = mt.exec_(self.srv, mt.probe_body(key))
        self.assertEqual(st, 200, (key, j))
        self.assertEqual(j.get("status"), "succeeded", j)
        self.assertRegex(str(j.get("job_id")), mt.JOB_ID_RE)
        self.assertIsInstance(j.get("duration_ms"), int, j)
        return j

    def test_probe_equals_ffprobe(self):
        for key in ("uploads/clip.mp4", "uploads/silent.mp4"):
            j = self.probe_ok(key)
            direct = mt.ffprobe(os.path.join(self.data, key))
            p = j.get("probe")
            self.assertIsInstance(p, dict, j)
            self.assertEqual(p["format"]["duration"], direct["format"]["duration"], key)
            self.assertEqual(p["format"]["format_name"], direct["format"]["format_name"])
            self.assertEqual(p["format"].get("nb_streams"), direct["format"]["nb_streams"])
            self.assertEqual(len(p["streams"]), len(direct["streams"]), key)
            self.assertEqual([s["codec_name"] for s in p["streams"]],
                             [s["codec_name"] for s in direct["streams"]], key)
            self.assertEqual([(s.get("width"), s.get("height")) for s in p["streams"]],
                             [(s.get("width"), s.get("height")) for s in direct["streams"]])
            # The job object holds the same result.
            st, h, job = mt.get_job(self.srv, j["job_id"])
            self.assertEqual(st, 200, job)
            self.assertEqual(job["status"], "succeeded")
            self.assertEqual(job["capability"], "ffprobe")
            self.assertEqual(job["input_key"], key)
            self.assertEqual(job["result"]["probe"]["format"]["duration"], direct["format"]["duration"])

    def test_seed_bodies(self):
        st, h, j = mt.exec_(self.srv, PROBE_BODY)
        self.assertEqual(st, 200, j)
        self.assertEqual(j["probe"]["format"]["duration"],
                         mt.ffprobe(os.path.join(self.data, "uploads/raw.mp4"))["format"]["duration"])
        st, h, j = mt.exec_(self.srv, SEED_BODY, timeout=150)
        self.assertEqual(st, 200, j)
        self.assertEqual(j["r2_key"], "renders/final.mp4")
        self.assertEqual(j["preset"], "1080p")
        path = os.path.join(self.data, "renders/final.mp4")
        self.assertEqual(j["bytes"], os.path.getsize(path))
        self.assertEqual(mt.streams_of(mt.ffprobe(path), "video")[0]["height"], 1080)

    def test_missing_input(self):
        before = started_count(self.srv)
        sampler = mt.ChildSampler(self.srv.proc.pid, 0.005)
        sampler.start()
        try:
            for body in (mt.probe_body("uploads/nope.mp4"),
                         mt.probe_body("nothere/clip.mp4"),
                         mt.render_body("uploads/nope.mp4", "renders/nope.mp4", "720p"),
                         mt.render_body("uploads/nope.mp4", "renders/nope.mp4", "720p", **{"async": True})):
                st, h, j = mt.exec_(self.srv, body)
                self.assertEqual(st, 404, (body, j))
                self.assertEqual(j.get("code"), "input_not_found", j)
        finally:
            sampler.stop()
        self.assertEqual(sampler.seen, {}, "children started for a missing input")
        self.assertEqual(started_count(self.srv), before, "job.started logged for a missing input")
        self.assertFalse(os.path.exists(os.path.join(self.data, "renders/nope.mp4")))

    def test_hostile_keys(self):
        before = started_count(self.srv)
        for key in HOSTILE_KEYS:
            for body in (mt.probe_body(key),
                         mt.render_body(key, "renders/h.mp4", "720p"),
                         mt.render_body("uploads/clip.mp4", key, "720p")):
                with self.subTest(body=body):
                    st, h, j = mt.exec_(self.srv, body)
                    self.assertEqual((st, j.get("code")), (400, "invalid_key"), (body, j))
        self.assertEqual(started_count(self.srv), before)
        self.assertFalse(os.path.exists(os.path.join(self.data, "renders/h.mp4")))

    def test_symlinked_inputs_not_followed(self):
        up = os.path.join(self.data, "uploads")
        os.symlink("/etc/passwd", os.path.join(up, "evil.mp4"))
        os.symlink(os.path.join(self.outside, "clip.mp4"), os.path.join(up, "outlink.mp4"))
        os.symlink(self.outside, os.path.join(up, "dirlink"))
        os.symlink("clip.mp4", os.path.join(up, "inlink.mp4"))          # inside the root, still a symlink
        os.symlink("/etc", os.path.join(self.data, "etc"))
        before = started_count(self.srv)
        for key in ("uploads/evil.mp4", "uploads/outlink.mp4", "uploads/dirlink/clip.mp4",
                    "uploads/inlink.mp4", "etc/passwd"):
            for body in (mt.probe_body(key), mt.render_body(key, "renders/s.mp4", "720p")):
                st, h, j = mt.exec_(self.srv, body)
                self.assertEqual(st, 404, (key, j))
                self.assertEqual(j.get("code"), "input_not_found", (key, j))
                self.assertNotIn("root:", json.dumps(j))
        self.assertEqual(started_count(self.srv), before, "a job started on a symlinked input")
        self.assertFalse(os.path.exists(os.path.join(self.data, "renders/s.mp4")))

    def test_symlinked_output_dir_not_followed(self):
        victim_dir = tempfile.mkdtemp(prefix="capsrv-victim-")
        rd = os.path.join(self.data, "renders")
        os.makedirs(rd, exist_ok=True)
        os.symlink(victim_dir, os.path.join(rd, "outlink"))
        st, h, j = mt.exec_(self.srv, mt.render_body("uploads/clip.mp4", "renders/outlink/x.mp4",
                                                      "remux-mp4", wait=60))
        self.assertEqual(st, 502, j)
        self.assertEqual(j.get("code"), "storage_error", j)
        self.assertEqual(os.listdir(victim_dir), [], "output written through a symlinked directory")
        if j.get("job_id"):
            st, h, job = mt.get_job(self.srv, j["job_id"])
            self.assertEqual(job["status"], "failed", job)
            self.assertEqual(job["error"]["code"], "storage_error", job)

        # An output key that is itself a symlink to a file outside the root:
        # whatever the answer, the outside file is never written.
        victim = os.path.join(victim_dir, "victim.txt")
        with open(victim, "w") as f:
            f.write("precious")
        os.symlink(victim, os.path.join(rd, "linked.mp4"))
        st, h, j = mt.exec_(self.srv, mt.render_body("uploads/clip.mp4", "renders/linked.mp4",
                                                      "remux-mp4", wait=60))
        self.assertIn((st, j.get("code") if st != 200 else None), ((200, None), (502, "storage_error")), j)
        with open(victim) as f:
            self.assertEqual(f.read(), "precious", "file outside the data dir overwritten")

    def test_unicode_and_spaces(self):
        key = "uploads/my clip ñ 日本 🎬 (1).mp4"
        mt.put(self.srv, key, mt.clip(1.0, "320x240"))
        j = self.probe_ok(key)
        self.assertEqual(j["probe"]["format"]["duration"],
                         mt.ffprobe(os.path.join(self.data, key))["format"]["duration"])
        out = "renders/out put é/ü 1 – 日本.mp4"
        st, h, j = mt.exec_(self.srv, mt.render_body(key, out, "remux-mp4", wait=60))
        self.assertEqual(st, 200, j)
        self.assertEqual(j["r2_key"], out)
        path = os.path.join(self.data, out)
        self.assertTrue(os.path.isfile(path))
        self.assertEqual(j["bytes"], os.path.getsize(path))
        st, h, job = mt.get_job(self.srv, j["job_id"])
        self.assertEqual((job["input_key"], job["output_key"]), (key, out))
        # Same key sent with \u escapes in the JSON text.
        raw = json.dumps(mt.probe_body(key), ensure_ascii=True).encode()
        st, h, j = mt.exec_(self.srv, raw)
        self.assertEqual(st, 200, j)


WRAPPER = """#!/bin/sh
echo "$$ $0 $*" >> %s
exec %s "$@"
"""


class NoChildForMissingInput(mt.CleanCheckMixin, unittest.TestCase):
    """ffmpeg/ffprobe configured as wrappers that record each start and exec
    the real binaries: a missing input starts neither."""

    @classmethod
    def setUpClass(cls):
        d = tempfile.mkdtemp(prefix="capsrv-wrap-")
        cls.calls = os.path.join(d, "calls.log")
        for name, real in (("ffmpeg", mt.FFMPEG), ("ffprobe", mt.FFPROBE)):
            write_file(os.path.join(d, name), WRAPPER % (cls.calls, real), 0o755)
        # The wrappers record each start in a file no sandboxed child may
        # write (that is the sandbox's point, tested in test_sandbox.py and
        # test_hostile.py), so these children run unsandboxed.
        cls.srv = mt.start(["--ffmpeg", os.path.join(d, "ffmpeg"), "--ffprobe", os.path.join(d, "ffprobe"),
                            "--sandbox", "off"])
        mt.put(cls.srv, "uploads/clip.mp4", mt.clip(1.0, "320x240"))

    def calls_now(self):
        try:
            with open(self.calls) as f:
                return f.read().splitlines()
        except FileNotFoundError:
            return []

    def test_missing_input_starts_nothing(self):
        n = len(self.calls_now())
        for body in (mt.probe_body("uploads/missing.mp4"),
                     mt.render_body("uploads/missing.mp4", "renders/m.mp4", "720p")):
            st, h, j = mt.exec_(self.srv, body)
            self.assertEqual((st, j.get("code")), (404, "input_not_found"), j)
        time.sleep(0.3)
        self.assertEqual(self.calls_now()[n:], [], "ffmpeg/ffprobe ran for a missing input")
        # Control: the wrappers are really what the server runs.
        st, h, j = mt.exec_(self.srv, mt.probe_body("uploads/clip.mp4"))
        self.assertEqual(st, 200, j)
        new = self.calls_now()[n:]
        self.assertEqual(len(new), 1, new)
        self.assertIn("/ffprobe ", new[0])


LIMITED = "limited-token-0123456789abcdefghij"
FREE = "free-token-0123456789abcdefghijklmno"


class TokenPrefixes(mt.CleanCheckMixin, unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        d = tempfile.mkdtemp(prefix="capsrv-prefix-")
        tf = mt.write_token_file(d, [("limited", LIMITED), ("free", FREE)])
        cfg = write_file(os.path.join(d, "config.json"), json.dumps(
            {"token_prefixes": {"limited": {"input": ["uploads/"], "output": ["renders/"]}}}))
        cls.srv = mt.start(["--token-file", tf, "--config", cfg], token=None)
        mt.put(cls.srv, "uploads/clip.mp4", mt.clip(1.0, "320x240"))
        mt.put(cls.srv, "other/clip.mp4", mt.clip(1.0, "320x240"))
        mt.put(cls.srv, "uploadsX/clip.mp4", mt.clip(1.0, "320x240"))
        mt.put(cls.srv, "renders/in.mp4", mt.clip(1.0, "320x240"))

    def test_limited_token(self):
        data = mt.data_dir(self.srv)
        st, h, j = mt.exec_(self.srv, mt.probe_body("uploads/clip.mp4"), token=LIMITED)
        self.assertEqual(st, 200, j)
        st, h, j = mt.exec_(self.srv, mt.render_body("uploads/clip.mp4", "renders/ok.mp4", "remux-mp4"),
                            token=LIMITED)
        self.assertEqual(st, 200, j)
        before = started_count(self.srv)
        forbidden = [
            mt.probe_body("other/clip.mp4"),
            mt.probe_body("uploadsX/clip.mp4"),
            mt.probe_body("renders/in.mp4"),                      # renders/ is an output prefix only
            mt.render_body("other/clip.mp4", "renders/f1.mp4", "remux-mp4"),
            mt.render_body("uploads/clip.mp4", "other/f2.mp4", "remux-mp4"),
            mt.render_body("uploads/clip.mp4", "uploads/f3.mp4", "remux-mp4"),  # uploads/ is input only
            mt.render_body("uploads/clip.mp4", "rendersX/f4.mp4", "remux-mp4", **{"async": True}),
        ]
        for body in forbidden:
            st, h, j = mt.exec_(self.srv, body, token=LIMITED)
            self.assertEqual(st, 403, (body, j))
            self.assertEqual(j.get("code"), "key_forbidden", (body, j))
        self.assertEqual(started_count(self.srv), before, "a forbidden job started")
        for k in ("renders/f1.mp4", "other/f2.mp4", "uploads/f3.mp4", "rendersX/f4.mp4"):
            self.assertFalse(os.path.exists(os.path.join(data, k)), k)

    def test_unlisted_token_unrestricted(self):
        st, h, j = mt.exec_(self.srv, mt.probe_body("other/clip.mp4"), token=FREE)
        self.assertEqual(st, 200, j)
        st, h, j = mt.exec_(self.srv, mt.render_body("other/clip.mp4", "other/out.mp4", "remux-mp4"),
                            token=FREE)
        self.assertEqual(st, 200, j)
        self.assertTrue(os.path.isfile(os.path.join(mt.data_dir(self.srv), "other/out.mp4")))


if __name__ == "__main__":
    unittest.main(verbosity=2)
