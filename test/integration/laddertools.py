"""What the ladder tests share (test_ladder.py, test_ladder_streaming.py):
the S3 bed with one bucket, a server on it with the sources uploaded, and
the package checks (hlscheck.py) every ladder result goes through."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import dashcheck  # noqa: E402
import hlscheck  # noqa: E402
import mediatools as mt  # noqa: E402
import storagetools as st  # noqa: E402
from s3bed import S3Bed  # noqa: E402

BUCKET = "media"
PREFIX = "pre"  # The server's own prefix inside the bucket.
BED = None
TMP = None

CONTENT_TYPES = {"m3u8": "application/vnd.apple.mpegurl", "m4s": "video/iso.segment",
                 "mp4": "video/mp4", "ts": "video/mp2t", "mpd": "application/dash+xml"}
MANIFESTS = ("m3u8", "mpd")
SEGMENT_CACHE = "public, max-age=31536000, immutable"
PLAYLIST_CACHE = "public, max-age=60"


def setup_module():
    """Starts the bed (once per test module) and makes the bucket."""
    global BED, TMP
    if not st.have_bed():
        raise unittest.SkipTest("S3 bed not installed: scripts/s3-testbed.sh install")
    TMP = tempfile.mkdtemp(prefix="capsrv-ladder-")
    BED = S3Bed().start()
    BED.make_bucket(BUCKET)


def teardown_module():
    if BED is not None:
        BED.stop()
    if TMP:
        shutil.rmtree(TMP, True)


def bucket_objects(prefix):
    """{key relative to prefix: size} of what the bucket holds under prefix."""
    full = "%s/%s" % (PREFIX, prefix)
    return {o["Key"][len(full):]: o["Size"] for o in BED.list_objects(BUCKET, full)}


def full(prefix):
    """The bucket key of a job's prefix (the server's own prefix first)."""
    return "%s/%s" % (PREFIX, prefix)


def bed_url(key):
    """The bed's URL of a job's key; play.js signs its requests to it."""
    return "%s/%s/%s" % (BED.endpoint, BUCKET, full(key))



class LadderCase(unittest.TestCase):
    """A server on the bed with the sources uploaded, and the checks both
    ladder test modules share."""
    @classmethod
    def setUpClass(cls):
        cls.srv = st.start_s3(BED, BUCKET, PREFIX, ["--log-level", "debug"])
        ev = st.storage_event(cls.srv)
        if ev.get("event") != "storage.ready":
            raise AssertionError("start-up bucket check failed: %r" % ev)
        cls.src720 = mt.clip(12.0, "1280x720", rate=30)
        cls.src240 = mt.clip(6.0, "320x240", rate=25)
        cls.silent = mt.clip(6.0, "640x360", rate=25, audio=False)
        # The streaming and failure tests need a job that runs for a while
        # more than they need many rungs: 60 s at 360p (one rung + audio).
        cls.long = mt.clip(60.0, "640x360", rate=25)
        for key, path in (("in/720.mp4", cls.src720), ("in/240.mp4", cls.src240),
                          ("in/silent.mp4", cls.silent), ("in/long.mp4", cls.long)):
            BED.put_object(BUCKET, "%s/%s" % (PREFIX, key), path=path)
        audio = os.path.join(TMP, "audio.m4a")
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i",
                        "sine=frequency=440:duration=3", "-c:a", "aac", audio], check=True)
        BED.put_object(BUCKET, "%s/in/audio.m4a" % PREFIX, path=audio)

    @classmethod
    def tearDownClass(cls):
        mt.stop(cls.srv)

    def tearDown(self):
        st.assert_clean(self, self.srv, BED, (BUCKET,))

    def ladder(self, prefix, preset="hls-ladder", key="in/720.mp4", timeout=180, srv=None):
        status, _, j = mt.exec_(srv or self.srv, {"input_key": key, "output_prefix": prefix,
                                                  "preset": preset, "wait": 90}, timeout=timeout)
        if status == 202:
            j = mt.poll_job(srv or self.srv, j["job_id"], timeout=timeout)["result"]
            status = 200
        self.assertEqual(status, 200, j)
        self.assertEqual(j.get("status"), "succeeded", j)
        return j

    def check_package(self, prefix, result, segext, source=12.0, play=False, dash=False):
        """The HLS package (and, with dash, the MPD over the same segments)
        is valid, is all the bucket holds under prefix, and matches the
        result; ffmpeg decodes it; with play, a browser player plays it."""
        get = hlscheck.s3_getter(BED, BUCKET)
        names = [r["name"] for r in result["renditions"]]
        summary = hlscheck.check_package(get, full(prefix), source_duration=source,
                                         expect_renditions=names)
        keys = set(summary["keys"])
        if dash:
            keys |= self.check_mpd(get, prefix, result, source)
        else:
            self.assertNotIn("mpd_key", result)
        listed = bucket_objects(prefix)
        self.assertEqual({full(prefix) + k for k in listed}, keys,
                         "the bucket holds exactly what the manifests name")
        self.assertEqual(result["objects"], len(listed), result)
        self.assertEqual(result["bytes"], sum(listed.values()), result)
        self.assertEqual(result["master_key"], prefix + "master.m3u8")
        if summary["segment_type"] == "fmp4":
            # cap-server reads them from the fMP4 files it stores; the
            # checker has held their values to ffprobe's.
            for s in summary["renditions"]:
                self.assertIsNotNone(s["frame_rate"], "no FRAME-RATE for %s" % s["name"])
            for a in summary["audio"]:
                self.assertIsNotNone(a["channels"], "no CHANNELS for %s" % a["name"])
        by_name = {r["name"]: r for r in summary["renditions"]}
        for r in result["renditions"]:
            s = by_name[r["name"]]
            self.assertEqual((r["width"], r["height"]), (s["width"], s["height"]), r)
            self.assertEqual(r["bandwidth"], s["bandwidth"], r)
            self.assertEqual(r["codecs"], ",".join(s["codecs"]), r)
            self.assertEqual(r["playlist_key"], "%s%s/index.m3u8" % (prefix, r["name"]))
            self.assertEqual(r["segments"], s["segments"], r)
        for key in listed:
            ext = key.rsplit(".", 1)[1]
            h = BED.head_object(BUCKET, "%s/%s%s" % (PREFIX, prefix, key))
            self.assertEqual(h.get("ContentType"), CONTENT_TYPES[ext], key)
            want = PLAYLIST_CACHE if ext in MANIFESTS else SEGMENT_CACHE
            self.assertEqual(h.get("CacheControl"), want, key)
            if ext not in MANIFESTS:
                self.assertEqual(ext, "mp4" if "init" in key else segext, key)
        # ffmpeg cannot sign requests: it reads the bucket through a plain
        # HTTP server over the same signed GETs.
        with hlscheck.serve(get) as srv:
            hlscheck.decode_all(srv.url(full(prefix) + "master.m3u8"))
            if dash:
                dashcheck.decode_mpd(srv.url(full(prefix) + "manifest.mpd"))
        if play:
            self.play(prefix, len(names))
            if dash:
                self.play_dash(prefix, len(names))
        return summary

    def check_mpd(self, get, prefix, result, source):
        """The MPD is valid and describes what the result (and the HLS
        master) says: the same renditions, sizes and codecs, each stream's
        own bandwidth.  Returns the keys it names."""
        self.assertEqual(result["mpd_key"], prefix + "manifest.mpd", result)
        ids = [r["name"] for r in result["renditions"]] + (["audio"] if result["audio"] else [])
        d = dashcheck.check_mpd(get, full(prefix) + "manifest.mpd", source_duration=source,
                                expect_representations=ids)
        by_id = {r["id"]: r for r in d["representations"]}
        audio = result["audio"]["codecs"] if result["audio"] else None
        for r in result["renditions"]:
            rep = by_id[r["name"]]
            self.assertEqual((rep["width"], rep["height"]), (r["width"], r["height"]), rep)
            self.assertEqual(rep["codecs"], r["codecs"].replace("," + audio, "") if audio else r["codecs"])
            self.assertEqual(rep["segments"], r["segments"], rep)
            self.assertLess(rep["bandwidth"], r["bandwidth"] if audio else r["bandwidth"] + 1,
                            "an MPD Representation's bandwidth is its own stream's")
        if audio:
            self.assertEqual(by_id["audio"]["codecs"], audio)
        return d["keys"]

    def play_dash(self, prefix, levels):
        """dash.js in Chromium plays the MPD from the bed to its end,
        switching Representation when forced."""
        url = bed_url(prefix + "manifest.mpd")
        ok, why = hlscheck.have_player(url)
        if not ok:
            self.fail("the DASH player test cannot run: %s (scripts/setup-deps.sh test)" % why)
        force = 0 if levels > 1 else None
        r = hlscheck.play_in_browser(url, force_level=force, env=BED.env(), timeout=120)
        self.assertTrue(r.get("ok"), r)
        self.assertTrue(r.get("ended"), r)
        if r.get("eos_by_harness"):
            # Every track was buffered to the end; dash.js lost its own
            # endOfStream() to a busy SourceBuffer (dash-player.html).
            print("\n  dash.js did not end the stream; the harness did: %s"
                  % json.dumps(r["eos_by_harness"]), file=sys.stderr)
        self.assertEqual(len(r.get("representations", [])), levels, r)
        if force is not None:
            # dash.js also reports the first Representation it renders, so
            # the switch is the forced one rendered after another one.
            self.assertIs(r.get("switched"), True, r)
            rendered = [x["level"] for x in r.get("level_switched", [])]
            self.assertIn(force, rendered[1:], r)
            self.assertNotEqual(rendered[0], force, r)

    def play(self, prefix, levels):
        """hls.js in Chromium plays the master from the bed to its end,
        switching rendition when forced."""
        ok, why = hlscheck.have_player()
        if not ok:
            self.fail("the player test cannot run: %s (scripts/setup-deps.sh test)" % why)
        force = 0 if levels > 1 else None
        r = hlscheck.play_in_browser(bed_url(prefix + "master.m3u8"), force_level=force,
                                     env=BED.env(), timeout=120)
        self.assertTrue(r.get("ok"), r)
        self.assertEqual(len(r.get("levels", [])), levels, r)
        if force is not None:
            self.assertTrue(r.get("level_switched"), r)

