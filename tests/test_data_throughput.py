"""The throughput command runs end to end on tiny generated videos (numbers not asserted)."""
from vjepa_jax.data import throughput


def test_throughput_command_on_generated_videos(capsys):
    throughput.main(["--num_videos", "2", "--gen_frames", "12", "--gen_size", "32x32",
                     "--frames", "4", "--frame_step", "2", "--crop", "16", "--workers", "0",
                     "--batch_size", "2", "--batches", "1", "--json"])
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0].startswith("generated 2 videos of 12 frames at 32x32")
    result = __import__("json").loads(out[-1])
    assert result["per_worker"] > 0 and result["total"] > 0 and result["workers"] == 0
