"use strict";
// What both player pages share (player.html plays HLS with hls.js,
// dash-player.html DASH with dash.js): the state play.js reads back
// (window.__state, complete once window.__done), the event log, and the
// end of a run.  play.js serves this file as /__player/player-common.js.
window.__done = false;

// The fields both players report; a page adds its own (its player's
// version, its levels or representations).
function baseState(own) {
  return Object.assign({
    start_level: null, forced_level: null, switch_requested_at: null, level_switched: [],
    frag_loaded: {}, frag_buffered: {}, audio_frag_loaded: 0, audio_frag_buffered: 0,
    errors: [], fatal_errors: 0, video_errors: [], events: [],
    playing: false, ended: false, done_reason: null,
    duration: null, current_time: null, playback_rate: null,
    decoded_frames: null, dropped_frames: null, audio_decoded_bytes: null,
    mse_support: {}
  }, own);
}

function note(name, extra) {
  const v = document.getElementById("v");
  const e = { t: Math.round(performance.now()), event: name, ct: v ? +v.currentTime.toFixed(3) : null };
  if (extra !== undefined) e.data = extra;
  if (window.__state.events.length < 400) window.__state.events.push(e);
}

function finish(reason) {
  if (window.__done) return;
  const s = window.__state, v = document.getElementById("v");
  s.done_reason = reason;
  s.duration = isFinite(v.duration) ? v.duration : null;
  s.current_time = v.currentTime;
  s.playback_rate = v.playbackRate;
  if (v.getVideoPlaybackQuality) {
    const q = v.getVideoPlaybackQuality();
    s.decoded_frames = q.totalVideoFrames;
    s.dropped_frames = q.droppedVideoFrames;
  }
  if (typeof v.webkitAudioDecodedByteCount === "number") s.audio_decoded_bytes = v.webkitAudioDecodedByteCount;
  if (typeof v.webkitVideoDecodedByteCount === "number") s.video_decoded_bytes = v.webkitVideoDecodedByteCount;
  window.__done = true;
}

// Every SourceBuffer the page's player creates, with its type, so that a
// run that stalls can report each track's buffered ranges (the element's
// own buffered is only their intersection) and the MediaSource's state.
window.__sourceBuffers = [];
(function () {
  if (typeof MediaSource === "undefined") return;
  const add = MediaSource.prototype.addSourceBuffer;
  MediaSource.prototype.addSourceBuffer = function (type) {
    const sb = add.call(this, type);
    window.__sourceBuffers.push({ type: type, sb: sb, ms: this });
    return sb;
  };
})();

// [{type, ranges, media_source}] for every SourceBuffer still attached.
function sourceBufferState() {
  return window.__sourceBuffers.map(function (x) {
    let ranges = null;
    try {
      const b = x.sb.buffered;
      ranges = Array.from({ length: b.length }, function (_, i) { return [+b.start(i).toFixed(3), +b.end(i).toFixed(3)]; });
    } catch (err) { ranges = String(err); }
    return { type: x.type, ranges: ranges, media_source: x.ms.readyState };
  });
}

// Seconds of media played before a forced switch (a quarter of a shorter one).
const SWITCH_AFTER = 2;

function bump(map, key) { map[key] = (map[key] || 0) + 1; }

// What the video element itself says, the same whichever player feeds it:
// stalls and seeks for the log, its end, and a media error (which ends the run).
function watchVideo(v) {
  const s = window.__state;
  v.addEventListener("waiting", function () { note("waiting"); });
  v.addEventListener("seeking", function () { note("seeking"); });
  v.addEventListener("ended", function () { s.ended = true; note("ended"); finish("ended"); });
  v.addEventListener("error", function () {
    const err = v.error;
    s.video_errors.push({ code: err ? err.code : null, message: err ? err.message : null });
    note("video error", err ? err.message : null);
    finish("video-error");
  });
}
