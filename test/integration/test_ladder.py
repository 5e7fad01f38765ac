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
- dash-ladder: the same CMAF package with an MPD over it as well; the
  strict MPD checker (dashcheck.py) passes on it (timeline against the
  measured segments, each Representation's own bandwidth, codecs and size,
  every URL an object, nothing else stored); ffmpeg's DASH reader decodes
  it over HTTP; dash.js in headless Chromium plays it to the end,
  switching Representation when forced, and hls.js plays its master; the
  checker itself refuses broken MPDs;
- the request: output_prefix vs output_key mix-ups, prefix rules and
  token prefixes, an input without video (422 input_unsuitable).

The streaming and failure cases are in test_ladder_streaming.py.
"""
import os
import re
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import dashcheck  # noqa: E402
import hlscheck  # noqa: E402
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

    def test_dash_ladder(self):
        j = self.ladder("vod/dash/", preset="dash-ladder")
        self.assertEqual(j["mpd_key"], "vod/dash/manifest.mpd")
        self.assertEqual(j["master_key"], "vod/dash/master.m3u8")
        self.assertEqual([r["name"] for r in j["renditions"]], ["720p", "480p", "360p"])
        self.assertEqual(j["dropped"], ["1080p"])
        self.check_package("vod/dash/", j, "m4s", play=True, dash=True)
        # The audio's sampling rate and channels (checked against ffprobe
        # above); a checker that is shown them wrong or missing refuses.
        get = hlscheck.s3_getter(lt.BED, lt.BUCKET)
        key = lt.full("vod/dash/manifest.mpd")
        text = get(key).decode()
        acc = re.search(r'<AudioChannelConfiguration schemeIdUri="%s" value="(\d+)"/>\s*'
                        % re.escape(dashcheck.CHANNELS_SCHEME), text)
        self.assertIsNotNone(acc, text)
        self.assertRegex(text, r'id="audio" bandwidth="\d+" audioSamplingRate="\d+"')
        broken = {
            "channels": (text.replace(acc.group(0), acc.group(0).replace(
                'value="%s"' % acc.group(1), 'value="%d"' % (int(acc.group(1)) + 4))),
                         "AudioChannelConfiguration says"),
            "no channels": (text.replace(acc.group(0), ""), "no AudioChannelConfiguration"),
        }
        for what, (bad, phrase) in broken.items():
            with self.subTest(broken=what):
                self.assertNotEqual(bad, text)
                g = (lambda b: lambda k: b.encode() if k == key else get(k))(bad)
                with self.assertRaises(AssertionError) as cm:
                    dashcheck.check_mpd(g, key)
                self.assertIn(phrase, str(cm.exception))

    def test_dash_silent_source_and_a_checker_that_can_fail(self):
        """A source without audio: an MPD without an audio set.  Then the
        MPD checker is shown broken variants of this package and must
        refuse each one."""
        j = self.ladder("vod/dsilent/", preset="dash-ladder", key="in/silent.mp4")
        self.assertIsNone(j["audio"], j)
        self.check_package("vod/dsilent/", j, "m4s", source=6.0, dash=True)
        get = hlscheck.s3_getter(lt.BED, lt.BUCKET)
        key = lt.full("vod/dsilent/manifest.mpd")
        text = get(key).decode()
        self.assertNotIn('contentType="audio"', text)
        bw = re.search(r'bandwidth="(\d+)"', text).group(1)
        broken = {
            "type": (text.replace('type="static"', 'type="dynamic"'), "not static"),
            "bandwidth": (text.replace('bandwidth="%s"' % bw, 'bandwidth="%d"' % (int(bw) // 2)),
                          "measured peak"),
            "codecs": (re.sub(r'codecs="avc1\.[0-9a-f]+"', 'codecs="avc1.640033"', text), "@codecs"),
            "width": (text.replace('width="640"', 'width="1280"'), "the media are"),
            "duration": (re.sub(r'mediaPresentationDuration="[^"]+"',
                                'mediaPresentationDuration="PT9S"', text), "longest timeline"),
            "timeline": (re.sub(r' d="(\d+)"', lambda m: ' d="%d"' % (int(m.group(1)) + 500000), text, 1),
                         "measures"),
            "element": (text.replace("<Period", "<BaseURL>http://elsewhere/</BaseURL><Period"),
                        "unexpected element"),
            "escape": (text.replace('media="360p/', 'media="../../360p/'), "leaves the MPD's folder"),
            "frame rate": (re.sub(r'frameRate="[^"]+"', 'frameRate="24000/1001"', text),
                           "media's frame rate"),
            "no frame rate": (re.sub(r' frameRate="[^"]+"', "", text), "@frameRate=None"),
            "sar": (text.replace('sar="1:1"', 'sar="4:3"'), "sample aspect ratio"),
        }
        for what, (bad, phrase) in broken.items():
            with self.subTest(broken=what):
                self.assertNotEqual(bad, text)
                g = (lambda b: lambda k: b.encode() if k == key else get(k))(bad)
                with self.assertRaises(AssertionError) as cm:
                    dashcheck.check_mpd(g, key, source_duration=6.0)
                self.assertIn(phrase, str(cm.exception))
        seg = lt.full("vod/dsilent/360p/seg_00001.m4s")
        with self.assertRaises(AssertionError) as cm:
            dashcheck.check_mpd(lambda k: None if k == seg else get(k), key)
        self.assertIn("does not exist", str(cm.exception))

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
