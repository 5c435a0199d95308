"""The command line's one error contract (README "Errors and exit codes", neurflow/errors.py):
bad input is one `error:` line and exit 2, a runtime failure one `error:` line and exit 1,
Ctrl-C exit 130, for every command.  Real CLI (`main(argv)` in process), real embedded store."""

from __future__ import annotations

import _thread
import http.server
import json
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from ingest.store.embedded import free_port
from ingest.store.errors import ReadOnlyViolation, StoreQueryError, StoreUnavailable
from cli.ingest_commands import parse_classes
from neurflow.circuit import Params
from cli.main import main
from cli.contract import classify
from neurflow.errors import NeurflowInputError, NeurflowRuntimeError
from tests.fixtures_circuits import TEST_ARGS

ESCAPES = ("\r", "\x1b[")


def _run(capsys, argv: list[str]) -> tuple[int, str, list[str]]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err.strip().splitlines()


def _one_error_line(code: int, err: list[str], status: int) -> str:
    assert code == status and len(err) == 1 and err[0].startswith("error: "), (code, err)
    assert "Traceback" not in err[0] and "usage:" not in err[0]
    return err[0]


# --------------------------------------------------------------------------- the contract itself
def test_the_contract_maps_exceptions_to_statuses():
    assert classify(NeurflowInputError("bad")) == (2, "error: bad")
    assert classify(ReadOnlyViolation("refused:\n  DELETE")) == (2, "error: refused: DELETE")
    assert classify(StoreUnavailable("down")) == (1, "error: down")
    assert classify(StoreQueryError("failed")) == (1, "error: failed")
    assert classify(NeurflowRuntimeError("cannot write")) == (1, "error: cannot write")
    assert classify(NotADirectoryError(20, "Not a directory", "/x/y")) == (1, "error: Not a directory: /x/y")
    assert classify(KeyboardInterrupt()) == (130, "interrupted")
    assert classify(RuntimeError("a bug")) is None  # bugs keep their traceback


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["circuit", "--class", "1", "--tau", "many"], "neurflow circuit: argument --tau: invalid int value: 'many'"),
        (["circuit"], "neurflow circuit: the following arguments are required: --class"),
        (["query", "--max-rows", "many", "RETURN 1"], "argument --max-rows: invalid int value"),
        (["store", "bogus"], "invalid choice: 'bogus' (choose from 'start', 'stop', 'status'"),
        (["export", "--format", "xml", "--out", "x"], "argument --format: invalid choice: 'xml'"),
        (["ingest", "--tau"], "argument --tau: expected one argument"),
        (["nosuch"], "invalid choice: 'nosuch'"),
        ([], "the following arguments are required: command"),
    ],
)
def test_a_bad_option_is_one_line_not_the_usage(capsys, argv, expected):
    code, _, err = _run(capsys, argv)
    line = _one_error_line(code, err, 2)
    assert expected in line and "--help" in line


def test_help_exits_0_and_demo_help_shows_its_lighter_defaults(capsys):
    code, out, _ = _run(capsys, ["demo", "--help"])
    assert code == 0
    text = " ".join(out.split())
    for shown in ("(default 3)", "(default 20)", "(default 16)", "default 60)"):
        assert shown in text, shown
    squeezed = "".join(out.split())  # argparse wraps the description inside option names (--max-\nimages)
    assert "--tau3,--k20,--ig-steps16,--max-images60,--granularities1,0.5,--min-crop-std0.2" in squeezed
    code, out, _ = _run(capsys, ["ingest", "--help"])
    text = " ".join(out.split())
    assert code == 0 and all(s in text for s in ("(default 16)", "(default 50)", "default 200)"))


# --------------------------------------------------------------------------- query
def test_query_says_when_it_caps_and_checks_max_rows(store, monkeypatch, capsys):
    monkeypatch.setenv("NEURFLOW_STORE_DATABASE", store.database)
    five = "UNWIND range(1, 5) AS x RETURN x"
    for bad in ("0", "-1"):
        code, out, err = _run(capsys, ["query", "--max-rows", bad, five])
        assert "--max-rows must be at least 1" in _one_error_line(code, err, 2) and out == ""
    code, out, err = _run(capsys, ["query", "--max-rows", "3", five])
    assert code == 0 and out.strip().splitlines()[-1] == "(3 rows, capped: the query returned more)"
    assert len(err) == 1 and err[0].startswith("note: showing the first 3 rows") and "--max-rows N" in err[0]
    code, out, err = _run(capsys, ["query", "--max-rows", "3", "--format", "json", five])
    assert code == 0 and [r["x"] for r in json.loads(out)] == [1, 2, 3] and len(err) == 1  # stdout stays JSON
    code, out, err = _run(capsys, ["query", "--max-rows", "5", five])
    assert code == 0 and out.strip().splitlines()[-1] == "(5 rows)" and err == []

    # a refused write and a bad library query are bad input; a query the server fails is a runtime failure
    assert "read-only" in _one_error_line(*_run(capsys, ["query", "MATCH (m) DETACH DELETE m"])[::2], 2)
    assert "no library query named 'nope'" in _one_error_line(*_run(capsys, ["query", "--lib", "nope"])[::2], 2)
    assert "not of the form name=value" in _one_error_line(*_run(capsys, ["query", "--lib", "models", "-p", "x"])[::2], 2)
    assert "the query failed" in _one_error_line(*_run(capsys, ["query", "MATC (n) RETURN n"])[::2], 1)


# --------------------------------------------------------------------------- a store that is not there
class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # noqa: D102 - no request log on the test's stderr
        pass


def test_a_bolt_uri_on_an_http_server_fails_fast_and_says_what_to_do(store_server, monkeypatch, capsys, tmp_path):
    port = free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), _Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("NEURFLOW_STORE_URI", f"bolt://127.0.0.1:{port}")
    try:
        for argv in (["query", "RETURN 1"], ["export", "--format", "json", "--out", str(tmp_path / "g.json")]):
            t0 = time.monotonic()
            code, _, err = _run(capsys, argv)
            seconds = time.monotonic() - t0
            line = _one_error_line(code, err, 1)
            assert seconds < 10, f"{argv[0]} took {seconds:.1f} s"  # the driver alone waits 60 s
            assert "is an HTTP server" in line and "HTTP/1" in line  # what was found
            assert "NEURFLOW_STORE_URI" in line and "bolt://host:7687" in line and "unset it" in line  # what to do
    finally:
        server.shutdown()
        server.server_close()


def test_unreachable_and_external_stores_name_an_action(store_server, monkeypatch, capsys):
    monkeypatch.setenv("NEURFLOW_STORE_URI", f"bolt://127.0.0.1:{free_port()}")  # nobody listens
    line = _one_error_line(*_run(capsys, ["query", "RETURN 1"])[::2], 1)
    assert "cannot reach the store" in line and "unset NEURFLOW_STORE_URI" in line and "is it running" not in line
    line = _one_error_line(*_run(capsys, ["store", "start"])[::2], 1)
    assert "NEURFLOW_STORE_URI is set" in line and "unset NEURFLOW_STORE_URI" in line


# --------------------------------------------------------------------------- a store folder that cannot be written
def _store_commands(tmp_path: Path) -> list[list[str]]:
    return [
        ["store", "start"],
        ["query", "RETURN 1"],
        ["export", "--format", "json", "--out", str(tmp_path / "g.json")],
        ["app", "--port", str(free_port())],
        ["ingest", "--classes", "0", *TEST_ARGS],
    ]


def test_a_store_folder_under_a_file_is_one_line(trained_model, store_server, tmp_path, monkeypatch, capsys):
    """Tests run as root, whom chmod does not stop: a path under a regular file fails for anyone."""
    (tmp_path / "plain-file").write_text("x")
    folder = tmp_path / "plain-file" / "store"
    monkeypatch.setenv("NEURFLOW_STORE_DIR", str(folder))
    for argv in _store_commands(tmp_path):
        line = _one_error_line(*_run(capsys, argv)[::2], 1)
        assert str(folder) in line and "NEURFLOW_STORE_DIR" in line, argv


def test_an_unwritable_folder_of_a_running_store_is_one_line(trained_model, store_server, tmp_path, capsys):
    """The folder of the running server, where this process cannot create its start lock
    (a folder in the lock's place stops root too): every command, `neurflow app` included."""
    folder = Path(store_server.data_dir)
    lock = folder / "start.lock"
    lock.rename(folder / "start.lock.saved")
    lock.mkdir()
    try:
        for argv in _store_commands(tmp_path):
            line = _one_error_line(*_run(capsys, argv)[::2], 1)
            assert f"cannot use the store folder {folder}" in line and "NEURFLOW_STORE_DIR" in line, argv
    finally:
        lock.rmdir()
        (folder / "start.lock.saved").rename(lock)


# --------------------------------------------------------------------------- method options
def test_a_descending_class_range_names_the_fix(trained_model, capsys):
    with pytest.raises(NeurflowInputError, match="descending range 3-1: write 1-3"):
        parse_classes("3-1", 10)
    assert parse_classes("1-3", 10) == [1, 2, 3]
    line = _one_error_line(*_run(capsys, ["ingest", "--classes", "3-1", *TEST_ARGS])[::2], 2)
    assert "descending range 3-1: write 1-3" in line


def test_tau_and_k_are_refused_before_the_activation_pass(trained_model, fashion_train_images, capsys):
    from neurflow.method import RunOptions, build_circuit

    images = fashion_train_images(1, limit=24)
    for params, message in ((Params(tau=1000, k=20), "tau=1000 is larger than layer 'block4''s 64 channels"),
                            (Params(tau=4, k=100000), "k=100000 is larger than the")):
        phases: list[str] = []
        with pytest.raises(NeurflowInputError, match=message.replace("(", r"\(")):
            build_circuit(trained_model.module, list(trained_model.spec.layers), images, 1, params,
                          run=RunOptions(progress=False, on_phase=lambda phase, *_: phases.append(phase)))
        assert phases == []  # no activation pass (nor anything after it) ran
    t0 = time.monotonic()
    line = _one_error_line(*_run(capsys, ["circuit", "--model", "fashion-cnn", "--class", "1", "--tau", "1000", "--device", "cpu", "--quiet"])[::2], 2)
    assert "layer 'block4''s 64 channels" in line and "--tau 64" in line
    assert time.monotonic() - t0 < 60  # 200 images: the activation pass alone took 100 s on the shared test machine


def test_hints_name_the_cli_flag_on_the_command_line_and_the_argument_in_python(trained_model, fashion_train_images,
                                                                               tmp_path, capsys):
    """A hint names what the reader can type where they are, and the class as they named it."""
    import neurflow

    t_shirts = fashion_train_images(0, limit=8)
    with pytest.raises(NeurflowInputError) as err:
        neurflow.build_circuit(trained_model, t_shirts, "Ankle boot", tau=2, k=2, progress=False, device="cpu")
    message = str(err.value)
    assert "the model predicts class 9 (Ankle boot) for none of the 8 images given" in message
    assert "predicted_only=False" in message and "--all-images" not in message
    with pytest.raises(NeurflowInputError, match=r"pass tau=64 or less"):
        neurflow.build_circuit(trained_model, t_shirts, 0, tau=1000, progress=False, device="cpu")
    folder = tmp_path / "imgs" / "Ankle boot"  # the T-shirts, filed as ankle boots
    folder.mkdir(parents=True)
    for i in range(4):
        Image.fromarray((_denorm_fashion(t_shirts.pixels[i, 0]) * 255).round().byte().numpy(), "L").save(folder / f"{i}.png")
    line = _one_error_line(*_run(capsys, ["circuit", "--model", "fashion-cnn", "--data", str(tmp_path / "imgs"),
                                          "--class", "Ankle boot", "--tau", "2", "--k", "2", "--device", "cpu", "--quiet"])[::2], 2)
    assert "class 9 (Ankle boot) for none of the 4 images" in line and "--all-images" in line and "predicted_only" not in line


def _denorm_fashion(pixels):
    from neurflow.models.fashion_cnn import FASHION_MEAN, FASHION_STD

    return (pixels * FASHION_STD[0] + FASHION_MEAN[0]).clamp(0, 1)


# --------------------------------------------------------------------------- progress, Ctrl-C, demo
def test_progress_bars_leave_no_escape_codes_off_a_terminal(trained_model, fashion_train_images, capsys):
    from neurflow.method import RunOptions, build_circuit

    build_circuit(trained_model.module, list(trained_model.spec.layers), fashion_train_images(1, limit=2), 1,
                  Params(tau=1, k=2, ig_steps=2, max_images=2), run=RunOptions(progress=True))
    err = capsys.readouterr().err
    assert not any(e in err for e in ESCAPES), repr(err[:200])


def test_ctrl_c_is_status_130(trained_model, capsys):
    timer = threading.Timer(1.0, _thread.interrupt_main)  # what SIGINT does to the main thread
    timer.start()
    try:
        code, _, err = _run(capsys, ["circuit", "--class", "1", "--device", "cpu", "--quiet"])  # long: full defaults
    finally:
        timer.cancel()
    assert (code, err) == (130, ["interrupted"])


# `neurflow demo`'s closing lines (where the store is, what to run next): tests/test_demo.py


def test_crop_options_reach_the_params_and_bad_values_are_one_line(capsys):
    from cli.main import build_parser
    from cli.options import params_from_args

    args = build_parser().parse_args(["circuit", "--class", "0", "--granularities", "1,0.5", "--min-crop-std", "0.2"])
    p = params_from_args(args)
    assert p.granularities == (1.0, 0.5) and p.min_crop_std == 0.2
    default = params_from_args(build_parser().parse_args(["circuit", "--class", "0"]))
    assert default.granularities == (1.0, 0.5, 0.25) and default.min_crop_std == 0.0  # the paper's
    for bad in (["--granularities", "1,x"], ["--granularities", "1,1.5"], ["--min-crop-std", "-1"]):
        assert main(["circuit", "--class", "0", *bad]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: --"), err
