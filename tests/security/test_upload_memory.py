"""Uploads of real size in bounded memory: a 100 MB file costs the web process a small multiple of
its parsed float32 rows, the file itself being read a block at a time.

The rows are parsed into one float32 array, which is written to the job's file in the storage a
block at a time: no copy of the rows is made on the way, on either profile."""

from collections.abc import Iterator

import numpy as np
import pytest
import requests

from tests.servers import Server, memory_kib, peak_memory_reset, start_server

MIB = 1 << 20
FILE_BYTES = 100 * MIB
CONSTANT = 64 * MIB  # besides the rows and their copies: a block's buffers, the request's objects
COPIES = 2  # the bound: about 2x the parsed float32 rows (they are held once)


@pytest.fixture(scope="module")
def web(instance, _servers_stopped) -> Iterator[Server]:
    server = start_server(instance, "uploads", args=["--no-worker", "--workers", "1"])
    _servers_stopped.append(server)
    yield server
    server.stop_soon()


def rows_file(path, fmt: str) -> int:
    """Write about FILE_BYTES of iris-like rows to ``path``; returns the number of rows."""
    block = np.random.default_rng(3).uniform(0, 8, size=(10_000, 4)).round(3)
    if fmt == "csv":
        text = "\n".join(",".join(f"{v:.3f}" for v in row) for row in block) + "\n"
    else:
        text = "\n".join("[" + ", ".join(f"{v:.3f}" for v in row) + "]" for row in block) + "\n"
    data = text.encode()
    repeats = FILE_BYTES // len(data)
    with path.open("wb") as file:
        for _ in range(repeats):
            file.write(data)
    return repeats * len(block)


def upload_with_peak(web: Server, key: str, path) -> tuple[requests.Response, int]:
    """Upload ``path`` as a batch job; the answer, and how far the web process's peak memory
    rose above its memory before (bytes)."""
    pid = web.web_pid()
    peak_memory_reset(pid)
    before = memory_kib(pid, "VmRSS") * 1024
    with path.open("rb") as file:
        response = requests.post(
            web.url("/api/v1/predict/batch"),
            files={"file": (path.name, file)},
            headers={"X-API-Key": key},
            timeout=300,
        )
    return response, memory_kib(pid, "VmHWM") * 1024 - before


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_100_mb_upload_takes_a_few_times_its_float32_rows(web, instance, tmp_path, figure, fmt):
    path = tmp_path / f"rows.{fmt}"
    n_rows = rows_file(path, fmt)
    response, peak = upload_with_peak(web, instance.demo_key, path)

    assert response.status_code == 202, response.text[:300]
    assert response.json()["total_inputs"] == n_rows
    rows_bytes = n_rows * 4 * 4
    size = path.stat().st_size
    figure(
        f"upload of {size / MIB:.0f} MiB of {fmt} ({rows_bytes / MIB:.0f} MiB of float32 rows):"
        f" the web process's peak memory rose {peak / MIB:.0f} MiB,"
        f" {peak / rows_bytes:.2f}x the rows, {peak / size:.2f}x the file"
    )
    assert peak <= COPIES * rows_bytes + CONSTANT


def test_an_npy_upload_at_the_row_cap_takes_about_its_rows(web, instance, tmp_path, figure):
    """The largest job there can be: MAX_BATCH_ROWS rows of iris as a float32 .npy (about 320
    MB, within MAX_UPLOAD_BYTES), held once by the web process and written to the storage."""
    n_rows = 20_000_000
    path = tmp_path / "rows.npy"
    rows = np.lib.format.open_memmap(path, mode="w+", dtype="<f4", shape=(n_rows, 4))
    rows[:] = np.float32(5.1)
    rows.flush()
    del rows
    response, peak = upload_with_peak(web, instance.demo_key, path)

    assert response.status_code == 202, response.text[:300]
    assert response.json()["total_inputs"] == n_rows
    rows_bytes = n_rows * 4 * 4
    figure(
        f"upload of a {path.stat().st_size / MIB:.0f} MiB .npy at the row cap: the web process's"
        f" peak memory rose {peak / MIB:.0f} MiB, {peak / rows_bytes:.2f}x the rows"
    )
    assert peak <= COPIES * rows_bytes + CONSTANT
    cancel = requests.post(
        web.url(f"/api/v1/predict/batch/{response.json()['job_id']}/cancel"),
        headers={"X-API-Key": instance.demo_key},
        timeout=30,
    )
    assert cancel.status_code == 202  # the next tests may queue jobs of their own
