"""OpenCue's real render-node daemon (RQD, `opencue-rqd`) run standalone, for the integration tests.

Runs under the RQD venv's Python (.venvs/rqd: opencue-rqd needs protobuf 7, which the main venv's
OpenTelemetry pins exclude), never imported by the main venv.

What is real: the `rqd` daemon itself (its own process, its own config file, its frame launch,
its `killpg(pid, 9)` kill, its per-session memory accounting, its task log). What is a stand-in:
Cuebot, OpenCue's Java server, which cannot run here. Only the side RQD talks to is stood in for:
`RqdReportInterface` (startup, status and frame-completion reports), which this harness answers and
records; and Cuebot's side of `RqdInterface` (LaunchFrame, KillRunningFrame, GetRunningFrameStatus),
which it calls with opencue-proto's own stub, as Cuebot does.

One tweak of RQD: its memory sampling interval (RSS_UPDATE_INTERVAL, 10 s, not configurable in
rqd.conf) is set to 1 s so that a test frame of a few seconds is sampled.

Protocol: JSON lines. The harness prints {"ready": ...} once RQD has reported its startup, then
answers one request per line on stdin:
  {"op": "launch", "frame_id": ..., "command": ..., "env": {...}, "log_dir": ..., "job": ..., ...}
  {"op": "status", "frame_id": ...}          -> the frame's RunningFrameInfo in RQD's host report
                                                (rss and max_rss in KB), null once it ended
  {"op": "kill", "frame_id": ...}
  {"op": "completions"}                      -> the FrameCompleteReports RQD sent so far
  {"op": "quit"}
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
from concurrent import futures

import grpc
from google.protobuf.json_format import MessageToDict
from opencue_proto import report_pb2, report_pb2_grpc, rqd_pb2, rqd_pb2_grpc


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cuebot(report_pb2_grpc.RqdReportInterfaceServicer):
    """Cuebot's report service: records what RQD reports, answers as Cuebot would (empty responses)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.startups: list[dict] = []
        self.statuses: list[dict] = []
        self.completions: list[dict] = []
        self.started = threading.Event()

    def ReportRqdStartup(self, request, context):
        with self.lock:
            self.startups.append(MessageToDict(request.boot_report))
        self.started.set()
        return report_pb2.RqdReportRqdStartupResponse()

    def ReportStatus(self, request, context):
        with self.lock:
            self.statuses.append(MessageToDict(request.host_report))
        return report_pb2.RqdReportStatusResponse()

    def ReportRunningFrameCompletion(self, request, context):
        with self.lock:
            self.completions.append(MessageToDict(request.frame_complete_report))
        return report_pb2.RqdReportRunningFrameCompletionResponse()


def _start_rqd(workdir: str, cuebot_port: int, rqd_port: int) -> subprocess.Popen:
    conf = os.path.join(workdir, "rqd.conf")
    with open(conf, "w", encoding="utf-8") as f:
        f.write("[Override]\n"
                f"RQD_GRPC_PORT={rqd_port}\nCUEBOT_GRPC_PORT={cuebot_port}\nOVERRIDE_CUEBOT=127.0.0.1\n"
                "OVERRIDE_NIMBY=False\nOVERRIDE_CORES=2\nOVERRIDE_HOSTNAME=rqd-test-host\n")
    launcher = os.path.join(workdir, "rqd_main.py")       # `rqd -c rqd.conf --nimbyoff`, sampling every 1 s
    with open(launcher, "w", encoding="utf-8") as f:
        f.write("import rqd.rqconstants as c\nc.RSS_UPDATE_INTERVAL = 1\n"
                "from rqd.__main__ import main\nmain()\n")
    return subprocess.Popen([sys.executable, launcher, "-c", conf, "--nimbyoff"], cwd=workdir,
                            stdout=open(os.path.join(workdir, "rqd.out"), "wb"), stderr=subprocess.STDOUT)


def _run_frame(req: dict) -> rqd_pb2.RunFrame:
    frame_id = req["frame_id"]
    return rqd_pb2.RunFrame(
        resource_id=f"proc-{frame_id}", job_id=req.get("job_id", "job-id-1"), job_name=req.get("job", "show-shot-job"),
        frame_id=frame_id, frame_name=req.get("frame_name", "0001-render"), layer_id="layer-id-1",
        command=req["command"], user_name=req.get("user", "root"), log_dir=req["log_dir"],
        show=req.get("show", "show"), shot=req.get("shot", "shot"), num_cores=req.get("num_cores", 100),
        environment=req.get("env", {}), ignore_nimby=True)


def main() -> int:
    workdir = tempfile.mkdtemp(prefix="rqd-harness-")
    cuebot = Cuebot()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    report_pb2_grpc.add_RqdReportInterfaceServicer_to_server(cuebot, server)
    cuebot_port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    rqd_port = _free_port()
    proc = _start_rqd(workdir, cuebot_port, rqd_port)

    def reply(doc: dict) -> None:
        sys.stdout.write(json.dumps(doc) + "\n")
        sys.stdout.flush()

    if not cuebot.started.wait(60):
        with open(os.path.join(workdir, "rqd.out"), encoding="utf-8", errors="replace") as f:
            reply({"error": "RQD did not report its startup within 60 s", "rqd_log": f.read()[-3000:]})
        proc.kill()
        return 1
    channel = grpc.insecure_channel(f"127.0.0.1:{rqd_port}")
    stub = rqd_pb2_grpc.RqdInterfaceStub(channel)
    reply({"ready": True, "rqd_pid": proc.pid, "rqd_port": rqd_port, "startup": cuebot.startups[0]})
    try:
        for line in sys.stdin:
            req = json.loads(line)
            op = req["op"]
            try:
                if op == "launch":
                    stub.LaunchFrame(rqd_pb2.RqdStaticLaunchFrameRequest(run_frame=_run_frame(req)), timeout=30)
                    reply({"ok": True})
                elif op == "status":
                    # Cuebot's own view of a host: RQD's HostReport (RQD 1.37's GetRunningFrameStatus reads
                    # a field its request does not have, so it cannot be used).
                    r = stub.ReportStatus(rqd_pb2.RqdStaticReportStatusRequest(), timeout=30)
                    frames = [MessageToDict(f) for f in r.host_report.frames if f.frame_id == req["frame_id"]]
                    reply({"ok": True, "info": frames[0] if frames else None})
                elif op == "kill":
                    stub.KillRunningFrame(rqd_pb2.RqdStaticKillRunningFrameRequest(
                        frame_id=req["frame_id"], message="killed by the test"), timeout=30)
                    reply({"ok": True})
                elif op == "completions":
                    with cuebot.lock:
                        reply({"ok": True, "completions": list(cuebot.completions)})
                elif op == "quit":
                    reply({"ok": True})
                    break
                else:
                    reply({"error": f"unknown op {op!r}"})
            except grpc.RpcError as e:
                reply({"error": f"{op}: {e.code().name}: {e.details()}"})
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        server.stop(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
