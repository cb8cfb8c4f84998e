"""The grader's isolation, tried from inside a submission: what its process can see, write, reach and kill.

One probe notebook (the exercise 00 solution plus a cell that tries every escape and prints
what happened) is graded as root and by an unprivileged grader (user namespaces); the
solution must still get full marks, from a folder directly under /tmp (this once gave the
whole cohort zero), and every escape must fail. Each grading takes a few seconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import course_lib
from course_lib.grading import grader, sandbox, trust
from course_lib.grading.sandbox import Limits, running_as_root

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "solutions" / "00_measuring_models.ipynb"
EXERCISE = ROOT / "exercises" / "00_measuring_models.ipynb"
COURSE_LIB = Path(course_lib.__file__).resolve().parent
NOBODY = 65534

needs_root = pytest.mark.skipif(not running_as_root(), reason="root: a leased uid, and setuid to test the non-root grader")

#: The escapes a submission tries; each prints ``blocked: <error>`` or what it got. PORT, GRADER_PID,
#: SUBMISSIONS and OUT are filled in by the test.
PROBE_CELL = '''
import json, os, signal, socket
from pathlib import Path
import course_lib
_repo = Path(course_lib.__file__).resolve().parent.parent
_found = {}
def _probe(name, action):
    try:
        _found[name] = repr(action())[:300]
    except BaseException as exc:
        _found[name] = "blocked: " + type(exc).__name__
_probe("git", lambda: os.listdir(_repo / ".git"))
_probe("solutions", lambda: os.listdir(_repo / "solutions"))
_probe("write_course_lib", lambda: open(Path(course_lib.__file__).parent / "grading" / "checks.py", "a").write("#"))
_probe("course_lib_mount_readonly", lambda: bool(os.statvfs(Path(course_lib.__file__).parent).f_flag & os.ST_RDONLY))
_probe("loopback", lambda: socket.create_connection(("127.0.0.1", PORT), timeout=3).close())
_probe("outside", lambda: socket.create_connection(("1.1.1.1", 53), timeout=3).close())
_probe("kill_grader", lambda: os.kill(GRADER_PID, signal.SIGKILL))
_probe("kill_parent", lambda: os.kill(os.getppid(), signal.SIGKILL))
_probe("proc", lambda: sorted(int(p) for p in os.listdir("/proc") if p.isdigit()))
_probe("submissions", lambda: os.listdir(SUBMISSIONS))
_probe("out", lambda: os.listdir(OUT))
_probe("scratch_writable", lambda: open("probe.txt", "w").write("x"))
_probe("no_new_privs", lambda: open("/proc/self/status").read().split("NoNewPrivs:")[1].split()[0])
print("PROBES " + json.dumps(_found))
'''

#: Grades the probe notebook in ``sys.argv[1]`` as whoever runs it; prints one JSON line.
RUNNER = '''
import json, os, socket, sys
from pathlib import Path
import nbformat
from course_lib.grading import grader, trust
submissions, out, source = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen()
cell = (sys.argv[4].replace("PORT", str(listener.getsockname()[1])).replace("GRADER_PID", str(os.getpid()))
        .replace("SUBMISSIONS", repr(str(submissions))).replace("OUT", repr(str(out))))
nb = nbformat.read(source, as_version=4)
nb.cells.append(nbformat.v4.new_code_cell(cell))
nbformat.write(nb, submissions / "alice.ipynb")
try:
    [result] = grader.grade_batch([("alice", submissions / "alice.ipynb")], source, out, progress=False)
except trust.IsolationUnavailable as exc:
    print("RESULT " + json.dumps({"refused": str(exc)}))
    raise SystemExit(0)
print("RESULT " + json.dumps({"mode": trust.isolation_mode(), "score": result.score, "max_score": result.max_score,
                              "reason": result.reason, "output": result.output}))
'''

#: Runs a command as ``nobody`` without capabilities. The interpreter may live under /root (mode
#: 0700, a pyenv): in a mount namespace of its own, the folders on the way are opened to others.
AS_NOBODY = '''
import ctypes, os, stat, sys
libc = ctypes.CDLL(None, use_errno=True)
def ok(result, what):
    if result != 0:
        raise OSError(ctypes.get_errno(), what)
ok(libc.unshare(0x00020000), "unshare")
ok(libc.mount(b"none", b"/", None, 16384 | (1 << 18), None), "private")
prefix = os.path.realpath(sys.base_prefix)
current = "/"
for part in prefix.split("/")[1:]:
    if not os.stat(current).st_mode & stat.S_IXOTH:
        fd = os.open(prefix, os.O_PATH | os.O_DIRECTORY)
        ok(libc.mount(b"tmpfs", current.encode(), b"tmpfs", 0, b"size=64k,mode=0755"), current)
        os.makedirs(prefix, exist_ok=True)
        ok(libc.mount(f"/proc/self/fd/{fd}".encode(), prefix.encode(), None, 4096 | 16384, None), prefix)
        break
    current = os.path.join(current, part)
os.setgroups([])
os.setgid(int(sys.argv[1]))
os.setuid(int(sys.argv[1]))
os.execve(sys.argv[2], sys.argv[2:], {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "TMPDIR": "/tmp", "LANG": "C.UTF-8"})
'''


#: Forks until the kernel says no, confined with a limit of 20 processes; prints the mode, exit code, forks.
FORK_BOMB = '''
from course_lib.grading.sandbox import Limits, run_confined, trust
code = """
import os, signal
forked = 0
try:
    while forked < 300:
        if os.fork() == 0:
            signal.pause()
        forked += 1
except OSError:
    pass
print(forked)
"""
returncode, out, _ = run_confined(["-c", code], {}, Limits(timeout_s=60, processes=20))
print(trust.isolation_mode(unsafe_same_user=True), returncode, out)
'''


@pytest.fixture
def folder_under_tmp():
    """``/tmp/<unique>/``, open to any grader user, holding bob's submission; alice's goes next to it.

    The folder above the submissions is ``/tmp`` itself: this once gave every submission zero.
    """
    folder = Path(tempfile.mkdtemp(prefix="course_lib_isolation_", dir="/tmp"))
    (folder / "bob.ipynb").write_bytes(EXERCISE.read_bytes())
    for path in (folder, folder / "bob.ipynb"):
        os.chmod(path, 0o777)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)
    shutil.rmtree(str(folder) + "_out", ignore_errors=True)
    shutil.rmtree(str(folder) + "_tools", ignore_errors=True)


def _run_probe(folder: Path, as_uid: int | None = None) -> dict:
    """Grade alice (solution + probe cell) from ``folder``, output to ``<folder>_out``; the runner's RESULT."""
    tools, out = Path(str(folder) + "_tools"), Path(str(folder) + "_out")
    for path in (tools, out):
        path.mkdir()
        os.chmod(path, 0o777)
    (tools / "runner.py").write_text(RUNNER)
    command = [sys.executable, str(tools / "runner.py"), str(folder), str(out), str(SOURCE), PROBE_CELL]
    if as_uid is not None:
        (tools / "as_user.py").write_text(AS_NOBODY)
        command = [sys.executable, "-I", str(tools / "as_user.py"), str(as_uid), *command]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd="/")
    assert done.returncode == 0, done.stderr[-3000:]
    [line] = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    return json.loads(line[len("RESULT "):])


def _assert_isolated(result: dict) -> None:
    # The solution, from a folder directly under /tmp, gets full marks: the grader survived every probe.
    assert result["score"] == result["max_score"] == 10, result["reason"] + result["output"][-2000:]
    [line] = [line for line in result["output"].splitlines() if line.startswith("PROBES ")]
    found = json.loads(line[len("PROBES "):])
    for escape in ("git", "solutions", "write_course_lib", "loopback", "outside", "kill_grader", "submissions", "out"):
        assert found[escape].startswith("blocked"), f"{escape}: {found[escape]}"
    assert found["course_lib_mount_readonly"] == "True"
    assert found["scratch_writable"] == "1"
    assert found["no_new_privs"] == "'1'"  # setuid programs cannot elevate
    pids = json.loads(found["proc"])  # a PID namespace of its own: PID 1 (the jail) and the notebook
    assert pids and max(pids) < 10, pids


@needs_root
def test_a_submission_sees_only_the_allow_list_as_root(folder_under_tmp):
    checks_py = COURSE_LIB / "grading" / "checks.py"
    before = hashlib.sha256(checks_py.read_bytes()).hexdigest()
    result = _run_probe(folder_under_tmp)
    assert result["mode"] == "root"
    _assert_isolated(result)
    assert hashlib.sha256(checks_py.read_bytes()).hexdigest() == before


@needs_root
def test_a_grader_without_root_isolates_the_same_way_or_refuses(folder_under_tmp):
    """The whole grader as ``nobody``: user namespaces give the same isolation; without them it refuses."""
    if not all(os.access(p, os.R_OK | os.X_OK) for p in (ROOT, COURSE_LIB, Path(sys.prefix))):
        pytest.skip("the repository or the environment is not readable by other users")
    result = _run_probe(folder_under_tmp, as_uid=NOBODY)
    if "refused" in result:
        assert "--unsafe-same-user" in result["refused"] and "user namespaces" in result["refused"]
        assert not list(Path(str(folder_under_tmp) + "_out").iterdir()), "a refused batch must write nothing"
        return
    assert result["mode"] == "userns"
    _assert_isolated(result)


@needs_root
def test_a_fork_bomb_is_bounded_in_a_user_namespace(folder_under_tmp):
    """RLIMIT_NPROC counts per uid *and user namespace*: a non-root grader's submission gets a count of its own."""
    (folder_under_tmp / "bomb.py").write_text(FORK_BOMB)
    (folder_under_tmp / "as_user.py").write_text(AS_NOBODY)
    done = subprocess.run([sys.executable, "-I", str(folder_under_tmp / "as_user.py"), str(NOBODY), sys.executable,
                           str(folder_under_tmp / "bomb.py")], capture_output=True, text=True, timeout=120, cwd="/")
    assert done.returncode == 0, done.stderr[-2000:]
    mode, returncode, forked = done.stdout.split()
    if mode != "userns":
        pytest.skip("user namespaces do not work here")
    assert returncode == "0" and 10 < int(forked) < 20  # the limit, less the jail's and the notebook's own processes


def test_without_isolation_the_grader_refuses_unless_told(monkeypatch, tmp_path):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(sandbox, "namespaces_problem", lambda: "jail: unshare: Operation not permitted")
    with pytest.raises(trust.IsolationUnavailable, match="unshare: Operation not permitted.*--unsafe-same-user"):
        grader.grade_batch([("alice", SOURCE)], SOURCE, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
    assert trust.isolation_mode(unsafe_same_user=True) == "none"
    monkeypatch.setattr(sandbox, "namespaces_problem", lambda: None)
    assert trust.isolation_mode() == "userns"


@needs_root
def test_the_jail_refuses_to_run_a_command_as_root(tmp_path):
    config = sandbox.jail_config(tmp_path, "none", None, Limits(), [])
    for mode in ("root", "userns", "none"):
        config["mode"] = mode
        done = subprocess.run(sandbox._jail_command(config, ["/bin/echo", "ran"]), capture_output=True, text=True, timeout=60)
        assert done.returncode == 2 and "refusing to run a submission as root" in done.stderr and "ran" not in done.stdout
    with pytest.raises(ValueError, match="leased uid"):
        sandbox.jail_config(tmp_path, "root", None, Limits(), [])


@needs_root
def test_uid_leases_live_in_a_root_only_folder_and_never_follow_links(tmp_path, monkeypatch):
    with sandbox.UidLease() as uid:
        assert sandbox.BASE_UID <= uid < sandbox.BASE_UID + sandbox.UID_RANGE
        info = os.lstat(sandbox.LOCK_DIR)
        assert info.st_uid == 0 and (info.st_mode & 0o777) == 0o700
    planted = tmp_path / "planted"
    planted.mkdir()
    (planted / f"course_lib_grader_uid_{sandbox.BASE_UID}.lock").symlink_to(tmp_path / "victim")
    with pytest.raises(OSError):
        sandbox.UidLease(planted).acquire()
    assert not (tmp_path / "victim").exists()
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o777)
    os.chmod(loose, 0o777)
    monkeypatch.setattr(sandbox, "LOCK_DIR", loose)
    with pytest.raises(RuntimeError, match="mode 0700"):
        sandbox.UidLease()


def test_a_process_that_dies_before_any_cell_says_why():
    """Its reason quotes the process's own last lines (here: the interpreter cannot start in 8 MB)."""
    result = grader.grade_submission(SOURCE, SOURCE, limits=Limits(memory_bytes=8 << 20, timeout_s=60))
    assert result.status == "error" and result.score == 0
    assert "exited (code 1); its last output:" in result.reason and "memory" in result.reason.lower(), result.reason
    assert len(result.reason) < 700


def test_visibility_allows_course_lib_and_the_environment_and_hides_the_repository():
    visible = trust.visible_paths()
    repository = trust.course_repository()
    assert str(COURSE_LIB) in visible and repository not in visible
    assert any(Path(sys.prefix).resolve() == Path(p) or Path(p) in Path(sys.prefix).resolve().parents for p in visible)
    hidden = trust.paths_to_hide([ROOT / "solutions"])
    assert repository in hidden and str((ROOT / "solutions").resolve()) in hidden
    assert trust.paths_to_hide(["/", "/usr"]) == trust.paths_to_hide([])  # /alice.ipynb's folder: never the system


@needs_root
def test_a_student_process_leases_its_own_uid_and_releases_it_when_closed():
    process = sandbox.StudentProcess(SOURCE, [], Limits(timeout_s=60), [], mode="root")
    assert process.uid is None  # nothing leased, and never a fallback uid, before it starts
    try:
        process.start()
        uid = process.uid
        assert uid is not None and sandbox.BASE_UID <= uid < sandbox.BASE_UID + sandbox.UID_RANGE
        with sandbox.UidLease() as other:
            assert other != uid  # held: no other grader gets it
    finally:
        process.close()
    assert not sandbox._processes_of(uid)
    with sandbox.UidLease() as again:
        assert again <= uid  # released with the process
