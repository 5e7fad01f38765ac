#!/usr/bin/env python3
"""Integration tests (jobs): every available built-in preset renders a real
clip through POST /exec; the output is checked with ffprobe.  NVENC presets
are unavailable here, unknown presets refused, /health reports jobs and
presets, and a --presets file works and is reloaded on SIGHUP."""
import json
import math
import os
import signal
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import mediatools as mt  # noqa: E402
from capsrv import TOKEN  # noqa: E402

IN_W, IN_H = 426, 240          # odd aspect (71:40): scaled widths must be rounded to even
CPU_PRESETS = ["1080p", "720p", "4k-h265", "audio-aac", "thumbnail-jpg", "remux-mp4",
               "hls-ladder", "hls-ladder-ts", "dash-ladder"]
NVENC_PRESETS = ["1080p-nvenc", "4k-h265-nvenc", "hls-ladder-nvenc"]

# What each built-in preset must produce.
EXPECT = {
    "1080p": dict(ext="mp4", height=1080, video="h264", audio="aac", duration=True, layout="frag"),
    "720p": dict(ext="mp4", height=720, video="h264", audio="aac", duration=True, layout="frag"),
    "4k-h265": dict(ext="mp4", height=2160, video="hevc", audio="aac", duration=True, layout="frag",
                    short=True),
    "audio-aac": dict(ext="m4a", height=None, video=None, audio="aac", duration=True, layout="frag"),
    "thumbnail-jpg": dict(ext="jpg", height=360, video="mjpeg", audio=None, duration=False,
                          layout="jpeg"),
    "remux-mp4": dict(ext="mp4", height=IN_H, video="h264", audio="aac", duration=True,
                      layout="faststart"),
    # Ladders: a package under a prefix (test_ladder.py checks packages in depth).
    "hls-ladder": dict(ladder="m4s"),
    "hls-ladder-ts": dict(ladder="ts"),
    "dash-ladder": dict(ladder="m4s", mpd=True),
}


def fmt_duration(probe):
    return float(probe["format"]["duration"])


class BuiltinPresets(mt.CleanCheckMixin, unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = mt.start()
        mt.put(cls.srv, "uploads/clip.mp4", mt.clip(1.0, "%dx%d" % (IN_W, IN_H)))
        # 4k-h265 upscales to 2160 lines: keep that render short.
        mt.put(cls.srv, "uploads/short.mp4", mt.clip(0.5, "%dx%d" % (IN_W, IN_H)))
        cls.rendered = {}

    def check_render(self, name):
        exp = EXPECT[name]
        in_key = "uploads/short.mp4" if exp.get("short") else "uploads/clip.mp4"
        out_key = "renders/%s/out.%s" % (name, exp["ext"])
        in_path = os.path.join(mt.data_dir(self.srv), in_key)
        out_path = os.path.join(mt.data_dir(self.srv), out_key)
        st, h, j = mt.exec_(self.srv, mt.render_body(in_key, out_key, name, wait=90), timeout=150)
        self.assertEqual(st, 200, "preset %s: %r" % (name, j))
        self.assertEqual(j.get("status"), "succeeded", j)
        self.assertEqual(j.get("r2_key"), out_key, j)
        self.assertEqual(j.get("preset"), name, j)
        self.assertRegex(str(j.get("job_id")), mt.JOB_ID_RE, j)
        self.assertIsInstance(j.get("duration_ms"), int, j)
        self.assertGreaterEqual(j["duration_ms"], 0)
        self.assertTrue(os.path.isfile(out_path), "no output file %s" % out_path)
        self.assertFalse(os.path.islink(out_path))
        self.assertIsInstance(j.get("bytes"), int, j)
        self.assertEqual(j["bytes"], os.path.getsize(out_path), j)
        self.assertGreater(j["bytes"], 0)

        src = mt.ffprobe(in_path)
        out = mt.ffprobe(out_path)
        vids, auds = mt.streams_of(out, "video"), mt.streams_of(out, "audio")
        if exp["video"]:
            self.assertEqual(len(vids), 1, out["streams"])
            v = vids[0]
            self.assertEqual(v["codec_name"], exp["video"], v)
            self.assertEqual(v["height"], exp["height"], v)
            self.assertEqual(v["width"] % 2, 0, "odd width %d" % v["width"])
            ideal = IN_W * exp["height"] / IN_H
            self.assertLessEqual(abs(v["width"] - ideal), 2.0,
                                 "aspect not kept: %dx%d from %dx%d" % (v["width"], v["height"], IN_W, IN_H))
        else:
            self.assertEqual(vids, [], "preset %s must have no video: %r" % (name, vids))
        if exp["audio"]:
            self.assertEqual(len(auds), 1, out["streams"])
            self.assertEqual(auds[0]["codec_name"], exp["audio"])
        else:
            self.assertEqual(auds, [], "preset %s must have no audio" % name)
        if exp["duration"]:
            din, dout = fmt_duration(src), fmt_duration(out)
            self.assertLessEqual(abs(din - dout), 0.1,
                                 "preset %s: duration %.3f s vs input %.3f s" % (name, dout, din))

        if exp["layout"] == "jpeg":
            with open(out_path, "rb") as f:
                self.assertEqual(f.read(3), b"\xff\xd8\xff", "not a JPEG file")
            self.assertEqual(len(out["streams"]), 1)
        else:
            boxes = mt.top_boxes(out_path)
            self.assertIn("ftyp", boxes)
            self.assertIn("moov", boxes, boxes)
            if exp["layout"] == "faststart":
                self.assertIn("mdat", boxes, boxes)
                self.assertLess(boxes.index("moov"), boxes.index("mdat"),
                                "%s: not faststart, top-level boxes %r" % (name, boxes))
                self.assertNotIn("moof", boxes, "%s: must not be fragmented: %r" % (name, boxes))
            elif exp["layout"] == "frag":
                self.assertIn("moof", boxes, "%s: not fragmented: %r" % (name, boxes))
                self.assertLess(boxes.index("moov"), boxes.index("moof"), boxes)

        # The job object agrees with the answer.
        st, h, job = mt.get_job(self.srv, j["job_id"])
        self.assertEqual(st, 200, job)
        self.assertEqual(job["status"], "succeeded", job)
        self.assertEqual(job["preset"], name)
        self.assertEqual(job["input_key"], in_key)
        self.assertEqual(job["output_key"], out_key)
        self.assertIsNone(job["error"], job)
        for k in ("r2_key", "bytes", "job_id", "preset"):
            self.assertEqual(job["result"].get(k), j[k], (k, job["result"], j))
        self.rendered[name] = j

    def available(self):
        return mt.preset_names(mt.health(self.srv)["presets"]["available"])

    def test_01_health_presets(self):
        hj = mt.health(self.srv)
        self.assertEqual(hj.get("status"), "ok")
        self.assertIn("presets", hj, hj)
        avail = mt.preset_names(hj["presets"]["available"])
        unavail = mt.preset_names(hj["presets"]["unavailable"])
        # ffmpeg here has libx264, libx265, aac and mjpeg but no GPU.
        self.assertEqual(sorted(avail), sorted(CPU_PRESETS), hj["presets"])
        self.assertEqual(sorted(unavail), sorted(NVENC_PRESETS), hj["presets"])

    def test_02_health_jobs(self):
        hj = mt.health(self.srv)
        jobs = hj.get("jobs")
        self.assertIsInstance(jobs, dict, hj)
        self.assertEqual(jobs.get("running"), 0, jobs)
        self.assertEqual(jobs.get("queued"), 0, jobs)
        slots = jobs.get("slots")
        cores = len(os.sched_getaffinity(0))
        self.assertEqual(slots["cpu"], {"size": math.ceil(cores / 2), "busy": 0, "queued": 0,
                                        "queue_max": 32}, slots)
        self.assertEqual(slots["nvenc"], {"size": 3, "busy": 0, "queued": 0, "queue_max": 32}, slots)

    def test_10_1080p(self):
        self.check_render("1080p")

    def test_11_720p(self):
        self.check_render("720p")

    def test_12_4k_h265(self):
        self.check_render("4k-h265")

    def test_13_audio_aac(self):
        self.check_render("audio-aac")

    def test_14_thumbnail_jpg(self):
        self.check_render("thumbnail-jpg")

    def test_15_remux_mp4(self):
        self.check_render("remux-mp4")

    def check_ladder(self, name):
        """A ladder of the small clip: every rung is above it, so one
        rendition at its own height, with audio, and the master last."""
        seg = EXPECT[name]["ladder"]
        prefix = "packages/%s/" % name
        st, h, j = mt.exec_(self.srv, {"input_key": "uploads/clip.mp4", "output_prefix": prefix,
                                       "preset": name, "wait": 90}, timeout=150)
        self.assertEqual(st, 200, "preset %s: %r" % (name, j))
        self.assertEqual((j["status"], j["preset"], j["master_key"]),
                         ("succeeded", name, prefix + "master.m3u8"), j)
        self.assertEqual([(r["height"], r["name"]) for r in j["renditions"]],
                         [(IN_H, "%dp" % IN_H)], j)
        root = os.path.join(mt.data_dir(self.srv), prefix)
        files = sorted(os.path.relpath(os.path.join(d, n), root)
                       for d, _, ns in os.walk(root) for n in ns)
        self.assertIn("master.m3u8", files)
        if EXPECT[name].get("mpd"):
            self.assertEqual(j["mpd_key"], prefix + "manifest.mpd", j)
            self.assertIn("manifest.mpd", files)
        else:
            self.assertNotIn("mpd_key", j)
            self.assertFalse(any(f.endswith(".mpd") for f in files), files)
        self.assertTrue(any(f.endswith("." + seg) for f in files), files)
        self.assertEqual(len(files), j["objects"], files)
        self.rendered[name] = j

    def test_16_hls_ladder(self):
        self.check_ladder("hls-ladder")

    def test_17_hls_ladder_ts(self):
        self.check_ladder("hls-ladder-ts")

    def test_18_dash_ladder(self):
        self.check_ladder("dash-ladder")

    def test_19_every_available_preset_rendered(self):
        # Any preset the server calls available must be one we render above.
        for name in self.available():
            self.assertIn(name, EXPECT, "available preset %s has no expectation" % name)

    def test_20_nvenc_unavailable(self):
        for name in NVENC_PRESETS:
            for extra in ({}, {"async": True}):
                body = mt.render_body("uploads/clip.mp4", "renders/nv-%s.mp4" % name, name, **extra)
                st, h, j = mt.exec_(self.srv, body)
                self.assertEqual(st, 422, (name, extra, j))
                self.assertEqual(j.get("code"), "preset_unavailable", j)
                self.assertFalse(os.path.exists(os.path.join(mt.data_dir(self.srv), "renders/nv-%s.mp4" % name)))
        self.assertEqual([l for l in mt.job_started_lines(self.srv) if "nvenc" in str(l.get("preset"))], [])

    def test_21_unknown_preset(self):
        for name in ("nope", "1080P", "1080p ", "720p-nvenc", "../1080p"):
            st, h, j = mt.exec_(self.srv, mt.render_body("uploads/clip.mp4", "renders/u.mp4", name))
            self.assertEqual(st, 400, (name, j))
            self.assertEqual(j.get("code"), "unknown_preset", (name, j))
        # capability omitted, preset present: still a render, still unknown.
        st, h, j = mt.exec_(self.srv, {"input_key": "uploads/clip.mp4", "output_key": "renders/u.mp4",
                                       "preset": "bogus"})
        self.assertEqual((st, j.get("code")), (400, "unknown_preset"), j)
        self.assertFalse(os.path.exists(os.path.join(mt.data_dir(self.srv), "renders/u.mp4")))


TINY_A = mt.small_preset(height=120)
TINY_B = mt.small_preset(height=96)


class CustomPresetsReload(mt.CleanCheckMixin, unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        import tempfile
        cls.dir = tempfile.mkdtemp(prefix="capsrv-presets-")
        missing_enc = dict(TINY_A, encoders=["libdoesnotexist"],
                           args=["-map", "0:v:0", "-c:v", "libdoesnotexist"])
        missing_mux = dict(TINY_A, format="nosuchmuxer")
        cls.path = mt.presets_file(cls.dir, {"tiny-a": TINY_A, "tiny-missing-enc": missing_enc,
                                             "tiny-missing-mux": missing_mux})
        cls.srv = mt.start(["--presets", cls.path])
        mt.put(cls.srv, "uploads/clip.mp4", mt.clip(1.0, "320x240"))

    def rewrite(self, content):
        tmp = self.path + ".new"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(content if isinstance(content, str) else json.dumps(content))
        os.replace(tmp, self.path)

    def presets(self):
        p = mt.health(self.srv)["presets"]
        return sorted(mt.preset_names(p["available"])), sorted(mt.preset_names(p["unavailable"]))

    def render_height(self, preset, out_key):
        st, h, j = mt.exec_(self.srv, mt.render_body("uploads/clip.mp4", out_key, preset, wait=60))
        self.assertEqual(st, 200, (preset, j))
        path = os.path.join(mt.data_dir(self.srv), out_key)
        self.assertEqual(j["bytes"], os.path.getsize(path))
        return mt.streams_of(mt.ffprobe(path), "video")[0]["height"]

    def test_1_custom_set_replaces_builtin(self):
        avail, unavail = self.presets()
        self.assertEqual(avail, ["tiny-a"])
        self.assertEqual(unavail, ["tiny-missing-enc", "tiny-missing-mux"])
        self.assertEqual(self.render_height("tiny-a", "renders/a1.mp4"), 120)
        st, h, j = mt.exec_(self.srv, mt.render_body("uploads/clip.mp4", "renders/x.mp4", "1080p"))
        self.assertEqual((st, j.get("code")), (400, "unknown_preset"), j)
        for name in ("tiny-missing-enc", "tiny-missing-mux"):
            st, h, j = mt.exec_(self.srv, mt.render_body("uploads/clip.mp4", "renders/x.mp4", name))
            self.assertEqual((st, j.get("code")), (422, "preset_unavailable"), (name, j))

    def test_2_sighup_reload(self):
        st, h, j = mt.exec_(self.srv, mt.render_body("uploads/clip.mp4", "renders/b0.mp4", "tiny-b"))
        self.assertEqual((st, j.get("code")), (400, "unknown_preset"), j)

        self.rewrite({"tiny-a": TINY_A, "tiny-b": TINY_B})
        self.srv.proc.send_signal(signal.SIGHUP)
        deadline = time.time() + 5
        while "tiny-b" not in self.presets()[0]:
            self.assertLess(time.time(), deadline, "SIGHUP did not load tiny-b: %r" % (self.presets(),))
            time.sleep(0.05)
        self.assertEqual(self.presets(), (["tiny-a", "tiny-b"], []))
        self.assertEqual(self.render_height("tiny-b", "renders/b1.mp4"), 96)

        # Broken files keep the old set.
        broken = ["{not json",
                  json.dumps({"tiny-c": {"class": "cpu"}}),                       # no args/format/ext
                  json.dumps({"tiny-c": dict(TINY_A, args=["-i", "/etc/passwd"])}),  # args may not set -i
                  json.dumps({}),
                  ""]
        for content in broken:
            self.rewrite(content)
            self.srv.proc.send_signal(signal.SIGHUP)
            time.sleep(1.0)
            self.assertIsNone(self.srv.proc.poll(), "server died on SIGHUP with %r" % content)
            self.assertEqual(self.presets(), (["tiny-a", "tiny-b"], []), content)
            st, h, j = mt.exec_(self.srv, mt.render_body("uploads/clip.mp4", "renders/c.mp4", "tiny-c"))
            self.assertEqual((st, j.get("code")), (400, "unknown_preset"), (content, j))
        os.unlink(self.path)
        self.srv.proc.send_signal(signal.SIGHUP)
        time.sleep(1.0)
        self.assertEqual(self.presets(), (["tiny-a", "tiny-b"], []))
        self.assertEqual(self.render_height("tiny-b", "renders/b2.mp4"), 96)
        self.assertEqual(self.render_height("tiny-a", "renders/a2.mp4"), 120)

        # A later good file replaces the whole set again.
        self.rewrite({"tiny-c": TINY_B})
        self.srv.proc.send_signal(signal.SIGHUP)
        deadline = time.time() + 5
        while self.presets()[0] != ["tiny-c"]:
            self.assertLess(time.time(), deadline, "reload to tiny-c failed: %r" % (self.presets(),))
            time.sleep(0.05)
        st, h, j = mt.exec_(self.srv, mt.render_body("uploads/clip.mp4", "renders/a3.mp4", "tiny-a"))
        self.assertEqual((st, j.get("code")), (400, "unknown_preset"), j)
        self.assertEqual(self.render_height("tiny-c", "renders/c1.mp4"), 96)


if __name__ == "__main__":
    unittest.main(verbosity=2)
