"""WAV/FLAC reading and writing: samples and generation parameters round-trip; bad files get clear errors."""
from __future__ import annotations

import struct

import numpy as np
import pytest
import soundfile as sf
import torch

from aigc.audio import audio_info, read_audio, read_audio_parameters, write_audio
from aigc.errors import ConfigError, DataError

from .signals import chirp, sine

PARAMS = {"model": "tts-tiny", "prompt": "春眠不觉晓，处处闻啼鸟 — naïve café 🎵", "seed": 12345,
          "steps": 50, "guidance": 3.5, "long": "x" * 100_000, "nested": {"list": [1, 2.5, None, True]}}


def stereo(sr: int = 16000) -> torch.Tensor:
    return torch.from_numpy(np.stack([sine(440, sr, 0.5, 0.5), chirp(sr, 0.5, 100, 4000, 0.5)]))


@pytest.mark.parametrize("name,subtype,tol", [("a.wav", None, 1 / 32768), ("a.wav", "PCM_24", 1 / 2 ** 23),
                                               ("a.wav", "FLOAT", 0.0), ("a.flac", None, 1 / 32768),
                                               ("a.flac", "PCM_24", 1 / 2 ** 23)])
def test_round_trip_of_samples_and_parameters(tmp_path, name, subtype, tol):
    wave = stereo()
    path = write_audio(tmp_path / name, wave, 16000, PARAMS, subtype=subtype)
    back, sr = read_audio(path, mono=False)
    assert sr == 16000 and back.dtype == torch.float32 and back.shape == wave.shape
    assert (back - wave).abs().max() <= tol
    assert read_audio_parameters(path) == PARAMS
    info = audio_info(path)
    assert (info.sample_rate, info.channels, info.frames, info.seconds) == (16000, 2, 8000, 0.5)
    assert sf.info(str(path)).frames == 8000  # still a file other programs read
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temporary file left behind


def test_wav_parameters_sit_in_a_list_info_chunk(tmp_path):
    path = write_audio(tmp_path / "a.wav", stereo(), 16000, {"seed": 1})
    data = path.read_bytes()
    assert data[:4] == b"RIFF" and struct.unpack("<I", data[4:8])[0] == len(data) - 8
    i = data.index(b"LIST")
    assert data[i + 8:i + 12] == b"INFO" and b'ICMT' in data[i:] and b'{"seed": 1}' in data[i:]
    with sf.SoundFile(str(path)) as f:  # libsndfile reads our chunk as the file's comment
        assert f.comment == '{"seed": 1}'


def test_flac_parameters_are_a_vorbis_comment(tmp_path):
    path = write_audio(tmp_path / "a.flac", stereo(), 16000, {"seed": 1})
    with sf.SoundFile(str(path)) as f:
        assert f.comment == '{"seed": 1}'


def test_mono_mixdown_resampling_and_no_parameters(tmp_path):
    wave = stereo(48000)
    path = write_audio(tmp_path / "b.wav", wave, 48000)
    assert read_audio_parameters(path) == {}
    mono, sr = read_audio(path)
    assert sr == 48000 and mono.shape == (1, 24000)
    assert torch.allclose(mono[0], wave.mean(0), atol=1 / 16384)
    low, sr = read_audio(path, sr=16000)
    assert sr == 16000 and low.shape == (1, 8000)


def test_pcm_is_clipped_and_one_dimensional_waves_are_mono(tmp_path):
    path = write_audio(tmp_path / "c.wav", torch.tensor([0.0, 2.0, -3.0, 0.5] * 100), 8000)
    back, _ = read_audio(path)
    assert back.shape == (1, 400) and back.max() <= 1.0 and back.min() >= -1.0


def test_a_foreign_comment_reads_as_text(tmp_path):
    path = tmp_path / "d.wav"
    with sf.SoundFile(str(path), "w", 8000, 1, "PCM_16") as f:
        f.comment = "recorded on a phone"
        f.write(np.zeros(800, dtype=np.float32))
    assert read_audio_parameters(path) == {"comment": "recorded on a phone"}


def test_overwriting_replaces_the_parameters(tmp_path):
    write_audio(tmp_path / "e.flac", stereo(), 16000, {"seed": 1})
    write_audio(tmp_path / "e.flac", stereo(), 16000, {"seed": 2})
    assert read_audio_parameters(tmp_path / "e.flac") == {"seed": 2}


# ---- bad input ----------------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="no such audio file"):
        read_audio(tmp_path / "nope.wav")
    with pytest.raises(DataError, match="not a file"):
        read_audio(tmp_path)


def test_empty_file(tmp_path):
    (tmp_path / "empty.wav").write_bytes(b"")
    for fn in (read_audio, audio_info, read_audio_parameters):
        with pytest.raises(DataError, match="empty"):
            fn(tmp_path / "empty.wav")


def test_a_header_with_no_samples(tmp_path):
    path = tmp_path / "none.wav"
    with sf.SoundFile(str(path), "w", 16000, 1, "PCM_16"):
        pass
    with pytest.raises(DataError, match="holds no samples"):
        read_audio(path)


def test_non_audio_file(tmp_path):
    path = tmp_path / "notes.wav"
    path.write_text("these are my notes, not a recording\n" * 20)
    with pytest.raises(DataError, match="not a readable audio file"):
        read_audio(path)
    with pytest.raises(DataError, match="not a readable audio file"):
        read_audio_parameters(path)


def test_corrupt_header(tmp_path):
    good = write_audio(tmp_path / "good.wav", stereo(), 16000).read_bytes()
    broken = bytearray(good)
    broken[20:36] = b"\xff" * 16  # the fmt chunk's body
    (tmp_path / "bad.wav").write_bytes(bytes(broken))
    with pytest.raises(DataError, match="corrupt header"):
        read_audio(tmp_path / "bad.wav")
    (tmp_path / "cut.wav").write_bytes(good[:30])  # cut inside the header
    with pytest.raises(DataError, match="corrupt header"):
        audio_info(tmp_path / "cut.wav")


def test_truncated_flac(tmp_path):
    good = write_audio(tmp_path / "good.flac", chirp(16000, 1.0, 100, 5000), 16000).read_bytes()
    (tmp_path / "cut.flac").write_bytes(good[:len(good) // 3])
    with pytest.raises(DataError, match="corrupt"):
        read_audio(tmp_path / "cut.flac")


def test_too_long_file(tmp_path):
    path = write_audio(tmp_path / "long.flac", np.zeros(8000 * 3, dtype=np.float32), 8000)
    with pytest.raises(DataError, match=r"3\.0 s long, over the limit of 2\.0 s"):
        read_audio(path, max_seconds=2.0)
    assert read_audio(path, max_seconds=None)[0].shape == (1, 24000)


def test_two_hours_are_refused_from_the_header_alone(tmp_path):
    # a header that claims 2 h 1 min of 8 kHz PCM: refused before anything is decoded
    path = tmp_path / "huge.wav"
    frames = 8000 * (2 * 3600 + 60)
    header = (b"RIFF" + struct.pack("<I", 36 + 2 * frames) + b"WAVE" + b"fmt " +
              struct.pack("<IHHIIHH", 16, 1, 1, 8000, 16000, 2, 16) + b"data" + struct.pack("<I", 2 * frames))
    with open(path, "wb") as f:
        f.write(header)
        f.truncate(len(header) + 2 * frames)  # sparse: no real disk use
    assert audio_info(path).seconds == 2 * 3600 + 60
    with pytest.raises(DataError, match="2.02 h long, over the limit of 2.00 h"):
        read_audio(path)


def test_unsupported_extensions(tmp_path):
    (tmp_path / "a.mp4").write_bytes(b"\0" * 100)
    with pytest.raises(DataError, match="unsupported audio extension .mp4"):
        read_audio(tmp_path / "a.mp4")
    with pytest.raises(ConfigError, match="must end in one of .wav, .flac"):
        write_audio(tmp_path / "a.mp3", stereo(), 16000)
    assert not (tmp_path / "a.mp3").exists()


@pytest.mark.parametrize("kwargs,match", [
    ({"wave": torch.zeros(2, 3, 4)}, "must be"), ({"wave": torch.zeros(0)}, "no samples"),
    ({"wave": torch.tensor([0.0, float("nan")])}, "NaN"), ({"sr": 0}, "sample rate"),
    ({"sr": 16000.5}, "sample rate"), ({"parameters": {"x": float("nan")}}, "finite"),
    ({"parameters": {"x": object()}}, "JSON"), ({"parameters": {"x": "y" * (1 << 21)}}, "over the limit"),
    ({"subtype": "FLOAT", "name": "x.flac"}, "cannot be written to FLAC"), ({"subtype": "ULAW"}, "subtype"),
    ({"wave": torch.zeros(100, dtype=torch.int16)}, "float samples"),
])
def test_bad_writes_fail_before_any_file_is_made(tmp_path, kwargs, match):
    args = {"wave": torch.zeros(100), "sr": 16000, "parameters": None, "subtype": None, "name": "x.wav", **kwargs}
    with pytest.raises(ConfigError, match=match):
        write_audio(tmp_path / args["name"], args["wave"], args["sr"], args["parameters"], subtype=args["subtype"])
    assert list(tmp_path.iterdir()) == []


def test_bad_target_rate(tmp_path):
    path = write_audio(tmp_path / "a.wav", stereo(), 16000)
    with pytest.raises(ConfigError, match="sample rate"):
        read_audio(path, sr=-1)
