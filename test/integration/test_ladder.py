#!/usr/bin/env python3
"""Integration tests (issue 13): ladder jobs, the packages.  One ffmpeg
makes an HLS package (a split into scaled rungs + one AAC audio, keyframes
aligned), and cap-server streams it into a real S3 server that verifies
SigV4 (Swift + s3api, s3bed.py).

- hls-ladder (CMAF) and hls-ladder-ts: the result names each rendition;
  the strict checker (hlscheck.py) passes on the package read back from
  the bucket (tags, EXTINF against measured segment durations, ENDLIST,
  BANDWIDTH/RESOLUTION/CODECS against what was encoded, keyframes aligned
  across rungs); every object a playlist names exists and nothing else was
  written; each object carries its Content-Type and Cache-Control; ffmpeg
  decodes every rendition over HTTP; hls.js in headless Chromium plays the
  master from the bed to its end, switching rendition when forced;
- rungs above the source are dropped and the result says so; a source
  below every rung gets one rendition at its own height; a source without
  audio gets no audio group;
- the request: output_prefix vs output_key mix-ups, prefix rules and
  token prefixes, an input without video (422 input_unsuitable).

The streaming and failure cases are in test_ladder_streaming.py.
"""
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import laddertools as lt  # noqa: E402
import mediatools as mt  # noqa: E402
import storagetools as st  # noqa: E402
from laddertools import LadderCase, bucket_objects  # noqa: E402


def setUpModule():
    lt.setup_module()


def tearDownModule():
    lt.teardown_module()


class Ladder(LadderCase):
    # --- packages ---------------------------------------------------------

    def test_hls_ladder_cmaf(self):
        j = self.ladder("vod/cmaf")
        self.assertEqual(j["output_prefix"], "vod/cmaf/")
        self.assertEqual([r["name"] for r in j["renditions"]], ["720p", "480p", "360p"])
        self.assertEqual(j["dropped"], ["1080p"], "no upscaling of a 720p source")
        self.assertEqual(j["source"], {"width": 1280, "height": 720})
        self.assertEqual(j["audio"]["codecs"], "mp4a.40.2")
        self.check_package("vod/cmaf/", j, "m4s", play=True)

    def test_hls_ladder_ts(self):
        j = self.ladder("vod/ts/", preset="hls-ladder-ts")
        self.check_package("vod/ts/", j, "ts", play=True)
        self.assertFalse(any(k.endswith(".m4s") for k in bucket_objects("vod/ts/")))

    def test_small_source_gets_one_rendition(self):
        j = self.ladder("vod/small/", key="in/240.mp4")
        self.assertEqual([r["name"] for r in j["renditions"]], ["240p"], j)
        self.assertEqual(j["dropped"], ["1080p", "720p", "480p", "360p"])
        self.assertEqual((j["renditions"][0]["width"], j["renditions"][0]["height"]), (320, 240))
        self.check_package("vod/small/", j, "m4s", source=6.0)

    def test_silent_source_has_no_audio_group(self):
        j = self.ladder("vod/silent/", key="in/silent.mp4")
        self.assertIsNone(j["audio"], j)
        self.assertEqual([r["name"] for r in j["renditions"]], ["360p"])
        summary = self.check_package("vod/silent/", j, "m4s", source=6.0)
        self.assertNotIn("audio/index.m3u8", summary["keys"])

    # --- the request ------------------------------------------------------

    def bad(self, body, status, code):
        s, _, j = mt.exec_(self.srv, body)
        self.assertEqual((s, j.get("code")), (status, code), j)
        self.assertIn("error", j)
        return j

    def test_request_mixups(self):
        j = self.bad({"input_key": "in/720.mp4", "output_key": "vod/x.m3u8", "preset": "hls-ladder"},
                     400, "invalid_field")
        self.assertIn("output_prefix", j["error"])
        j = self.bad({"input_key": "in/720.mp4", "output_prefix": "vod/x/", "preset": "720p"},
                     400, "invalid_field")
        self.assertIn("output_key", j["error"])
        self.bad({"input_key": "in/720.mp4", "output_prefix": "vod/x/", "output_key": "a.mp4",
                  "preset": "hls-ladder"}, 400, "invalid_field")
        self.bad({"input_key": "in/720.mp4", "output_prefix": "", "preset": "hls-ladder"},
                 400, "invalid_key")
        self.bad({"input_key": "in/720.mp4", "output_prefix": "../up/", "preset": "hls-ladder"},
                 400, "invalid_key")
        self.bad({"input_key": "in/720.mp4", "output_prefix": "/abs/", "preset": "hls-ladder"},
                 400, "invalid_key")
        self.bad({"input_key": "in/720.mp4", "output_prefix": "a" * 961, "preset": "hls-ladder"},
                 400, "invalid_key")
        self.bad({"input_key": "in/720.mp4", "output_prefix": 7, "preset": "hls-ladder"},
                 400, "invalid_field")
        self.bad({"capability": "ffprobe", "input_key": "in/720.mp4", "output_prefix": "p/"},
                 400, "invalid_field")
        for p in ("vod/x/", "up/", "abs/", "p/"):
            self.assertEqual(bucket_objects(p), {}, "nothing was written")

    def test_no_video_is_input_unsuitable(self):
        s, _, j = mt.exec_(self.srv, {"input_key": "in/audio.m4a", "output_prefix": "vod/noaudio/",
                                      "preset": "hls-ladder", "wait": 30})
        self.assertEqual((s, j.get("code")), (422, "input_unsuitable"), j)
        self.assertEqual(bucket_objects("vod/noaudio/"), {})
        self.assertEqual(st.job_lines(self.srv, j["job_id"], "job.started")[-1]["program"], "ffprobe",
                         "no ffmpeg ran")



class LadderTokenPrefixes(unittest.TestCase):
    def test_prefix_must_be_inside_the_token_output_prefixes(self):
        cfg = os.path.join(lt.TMP, "tp.json")
        with open(cfg, "w") as f:
            f.write('{"token_prefixes":{"default":{"input":["in/"],"output":["vod/ok/"]}}}')
        srv = st.start_s3(lt.BED, lt.BUCKET, lt.PREFIX, ["--config", cfg])
        try:
            base = {"input_key": "in/720.mp4", "preset": "hls-ladder"}
            s, _, j = mt.exec_(srv, dict(base, output_prefix="vod/other/"))
            self.assertEqual((s, j.get("code")), (403, "key_forbidden"), j)
            s, _, j = mt.exec_(srv, dict(base, output_prefix="vod/"))
            self.assertEqual((s, j.get("code")), (403, "key_forbidden"), j)
        finally:
            mt.stop(srv)


if __name__ == "__main__":
    unittest.main(verbosity=2)
