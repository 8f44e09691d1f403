#!/usr/bin/env python3
"""Drive the REAL Claude Code / Codex / Gemini CLIs against model_server.py and check
the outcomes documented in README.md.

    python3 check_clis.py [--bin-dir /tmp/npmtest/node_modules/.bin] [--cli claude,codex,gemini]
                          [--case a,b,c,...] [--keep] [--workroot DIR]

Every CLI run gets a fresh HOME (+ CODEX_HOME / GEMINI_CLI_HOME / TMPDIR) and work dir
under the work root, and a minimal environment (env is NOT inherited except PATH).
Each case starts its own server and stops it (by PID) afterwards.
Prints one line per run and a final PASS/FAIL; writes results.json in the work root.
Standard library only.
"""

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SERVER = os.path.join(HERE, "model_server.py")
BASE_PATH = "/usr/local/bin:/usr/bin:/bin"
EXTRA_ARGS = {"claude": [], "codex": [], "gemini": []}  # set by --args


# ----------------------------------------------------------------------------- server

class ModelServer:
    def __init__(self, workdir, scenario):
        self.scenario_path = os.path.join(workdir, "scenario.json")
        self.log_path = os.path.join(workdir, "requests.jsonl")
        with open(self.scenario_path, "w") as f:
            json.dump(scenario, f, indent=1)
        self.proc = subprocess.Popen(
            [sys.executable, SERVER, "--scenario", self.scenario_path, "--log", self.log_path, "--port", "0"],
            stdout=subprocess.PIPE, stderr=open(os.path.join(workdir, "server.stderr"), "w"), text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("listening "):
            raise RuntimeError("server did not start: %r" % line)
        self.port = int(line.split()[1])

    def stop(self):
        self.proc.terminate()  # this Popen's own PID only
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def requests(self):
        out = []
        if os.path.exists(self.log_path):
            with open(self.log_path) as f:
                out = [json.loads(l) for l in f if l.strip()]
        return out


# ----------------------------------------------------------------------------- CLIs

def claude_cmd(bin_dir, run_dir, port, extra_env):
    home = os.path.join(run_dir, "home")
    os.makedirs(home)
    env = {
        "PATH": BASE_PATH, "HOME": home,
        "ANTHROPIC_BASE_URL": "http://127.0.0.1:%d" % port,
        "ANTHROPIC_API_KEY": "sk-ant-test-key",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_TELEMETRY": "1", "DISABLE_AUTOUPDATER": "1", "DISABLE_ERROR_REPORTING": "1",
        "IS_SANDBOX": "1",
    }
    env.update(extra_env)
    argv = [os.path.join(bin_dir, "claude"), "-p", "--output-format", "stream-json", "--verbose",
            "--permission-mode", "bypassPermissions"]
    return argv, env


def codex_cmd(bin_dir, run_dir, port, extra_env, retries=0):
    home = os.path.join(run_dir, "home")
    codex_home = os.path.join(run_dir, "codexhome")
    os.makedirs(home)
    os.makedirs(codex_home)
    env = {"PATH": BASE_PATH, "HOME": home, "CODEX_HOME": codex_home, "FAKE_OPENAI_KEY": "sk-test-key"}
    env.update(extra_env)
    provider = ('model_providers.fake={name="fake",base_url="http://127.0.0.1:%d/v1",env_key="FAKE_OPENAI_KEY",'
                'wire_api="responses",request_max_retries=%d,stream_max_retries=0}' % (port, retries))
    argv = [os.path.join(bin_dir, "codex"), "exec", "--json", "--skip-git-repo-check",
            "--dangerously-bypass-approvals-and-sandbox",
            "-c", "model_provider=fake", "-c", provider, "-"]
    return argv, env


def gemini_cmd(bin_dir, run_dir, port, extra_env, max_attempts=1):
    home = os.path.join(run_dir, "home")
    tmp = os.path.join(run_dir, "tmp")
    os.makedirs(os.path.join(home, ".gemini"))
    os.makedirs(tmp)
    settings = {
        "security": {"auth": {"selectedType": "gemini-api-key"}},
        "general": {"maxAttempts": max_attempts, "enableAutoUpdate": False,
                    "enableAutoUpdateNotification": False},
        "privacy": {"usageStatisticsEnabled": False},
    }
    with open(os.path.join(home, ".gemini", "settings.json"), "w") as f:
        json.dump(settings, f, indent=1)
    env = {"PATH": BASE_PATH, "HOME": home, "GEMINI_CLI_HOME": home, "TMPDIR": tmp,
           "GOOGLE_GEMINI_BASE_URL": "http://127.0.0.1:%d" % port, "GEMINI_API_KEY": "test-key"}
    env.update(extra_env)
    argv = [os.path.join(bin_dir, "gemini"), "--output-format", "stream-json", "--skip-trust", "--yolo"]
    return argv, env


CMD = {"claude": claude_cmd, "codex": codex_cmd, "gemini": gemini_cmd}


def parse_outcome(cli, lines):
    """Terminal outcome per the rules of the research README §4."""
    ev = []
    for l in lines:
        l = l.strip()
        if not l:
            continue
        try:
            ev.append(json.loads(l))
        except ValueError:
            ev.append({"type": "<non-json>", "raw": l})
    o = {"terminal": None, "success": False, "text": None, "error": None, "retries": 0, "tools": []}
    if cli == "claude":
        for e in ev:
            if e.get("type") == "system" and e.get("subtype") == "api_retry":
                o["retries"] += 1
            if e.get("type") == "assistant":
                for b in e["message"].get("content", []):
                    if b.get("type") == "tool_use":
                        o["tools"].append(b["name"])
        res = [e for e in ev if e.get("type") == "result"]
        if res:
            r = res[-1]
            o["terminal"] = "result/%s is_error=%s api_error_status=%s" % (
                r.get("subtype"), r.get("is_error"), r.get("api_error_status"))
            o["success"] = r.get("subtype") == "success" and not r.get("is_error")
            if o["success"]:
                o["text"] = r.get("result")
            else:
                o["error"] = r.get("result") or r.get("errors")
            o["usage"] = r.get("usage", {}).get("input_tokens"), r.get("usage", {}).get("output_tokens")
    elif cli == "codex":
        for e in ev:
            it = e.get("item") or {}
            if e.get("type") == "item.completed" and it.get("type") == "agent_message":
                o["text"] = it.get("text")
            if e.get("type") == "item.completed" and it.get("type") == "command_execution":
                o["tools"].append("command_execution")
            if e.get("type") == "error":
                o["retries"] += 1 if "Reconnecting" in e.get("message", "") else 0
            if e.get("type") == "turn.completed":
                o["terminal"], o["success"] = "turn.completed", True
                o["usage"] = e["usage"].get("input_tokens"), e["usage"].get("output_tokens")
            if e.get("type") == "turn.failed":
                o["terminal"] = "turn.failed"
                o["error"] = e.get("error", {}).get("message")
        if not o["success"]:
            o["text"] = None
    else:
        text = []
        for e in ev:
            if e.get("type") == "tool_result":
                text = []
            if e.get("type") == "tool_use":
                o["tools"].append(e.get("tool_name"))
            if e.get("type") == "message" and e.get("role") == "assistant":
                text.append(e.get("content", ""))
            if e.get("type") == "result":
                o["terminal"] = "result/%s" % e.get("status")
                o["success"] = e.get("status") == "success"
                if e.get("error"):
                    o["error"] = "%s: %s" % (e["error"].get("type"), e["error"].get("message"))
                st = e.get("stats") or {}
                o["usage"] = st.get("input_tokens"), st.get("output_tokens")
        o["text"] = "".join(text) if o["success"] else None
    return o


def run_cli(cli, bin_dir, case_dir, name, port, prompt, extra_env=None, timeout=300, **kw):
    run_dir = os.path.join(case_dir, name)
    work = os.path.join(run_dir, "work")
    os.makedirs(work)
    argv, env = CMD[cli](bin_dir, run_dir, port, extra_env or {}, **kw)
    if EXTRA_ARGS[cli]:  # insert before codex's trailing "-" (prompt from stdin)
        argv = argv[:-1] + EXTRA_ARGS[cli] + argv[-1:] if cli == "codex" else argv + EXTRA_ARGS[cli]
    t0 = time.monotonic()
    try:
        p = subprocess.run(argv, input=prompt, cwd=work, env=env, capture_output=True, text=True,
                           timeout=timeout, start_new_session=True)
        rc, out, err = p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired as e:
        rc, out, err = "timeout", (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or ""), ""
    dt = time.monotonic() - t0
    with open(os.path.join(run_dir, "stdout.jsonl"), "w") as f:
        f.write(out)
    with open(os.path.join(run_dir, "stderr.txt"), "w") as f:
        f.write(err)
    with open(os.path.join(run_dir, "argv.json"), "w") as f:
        json.dump({"argv": argv, "env": env, "cwd": work}, f, indent=1)
    hello = os.path.join(work, "hello.txt")
    o = parse_outcome(cli, out.splitlines())
    o.update({"rc": rc, "seconds": round(dt, 2),
              "hello_txt": open(hello).read() if os.path.exists(hello) else None})
    return o


# ----------------------------------------------------------------------------- cases

def hello_steps(cli):
    return [{"shell": "printf 'hello from %s' > hello.txt" % cli}, {"text": "Done: wrote hello.txt"}]


def case_a(cli, bin_dir, case_dir):
    srv = ModelServer(case_dir, {"rules": [{"name": "hello", "match": "write hello", "steps": hello_steps(cli)}]})
    try:
        r = run_cli(cli, bin_dir, case_dir, "run1", srv.port, "Please write hello.txt")
    finally:
        srv.stop()
    ok = (r["rc"] == 0 and r["success"] and r["text"] == "Done: wrote hello.txt"
          and r["hello_txt"] == "hello from %s" % cli)
    return ok, [r], srv.requests()


def fail_case(cli, bin_dir, case_dir, status, count, runs, env=None, **kw):
    scenario = {"rules": [{"name": "flaky", "failFirst": {"status": status, "count": count},
                           "steps": hello_steps(cli)}]}
    srv = ModelServer(case_dir, scenario)
    results = []
    try:
        for i in range(runs):
            results.append(run_cli(cli, bin_dir, case_dir, "run%d" % (i + 1), srv.port,
                                   "Please write hello.txt", extra_env=env, **kw))
    finally:
        srv.stop()
    return results, srv.requests()


def case_multi(cli, bin_dir, case_dir):
    """Two tool round-trips (the first with a text preamble), then the final answer."""
    steps = [{"text": "Looking around.", "shell": "echo one > multi.txt"},
             {"shell": "echo two >> multi.txt"},
             {"text": "Finished both steps.", "usage": {"input_tokens": 1234, "output_tokens": 56}}]
    srv = ModelServer(case_dir, {"rules": [{"name": "other", "match": "NOT-IN-PROMPT", "steps": [{"text": "wrong"}]},
                                           {"name": "multi", "steps": steps}]})
    try:
        r = run_cli(cli, bin_dir, case_dir, "run1", srv.port, "Do the multi-step thing")
    finally:
        srv.stop()
    path = os.path.join(case_dir, "run1", "work", "multi.txt")
    r["multi_txt"] = open(path).read() if os.path.exists(path) else None
    ok = (r["rc"] == 0 and r["success"] and r["text"] == "Finished both steps."
          and r["multi_txt"] == "one\ntwo\n" and len(r["tools"]) == 2)
    return ok, [r], srv.requests()


NO_RETRY_ENV = {"claude": {"CLAUDE_CODE_MAX_RETRIES": "0"}, "codex": {}, "gemini": {}}


def case_b(cli, bin_dir, case_dir):
    rs, reqs = fail_case(cli, bin_dir, case_dir, 500, -1, 1, env=NO_RETRY_ENV[cli])
    r = rs[0]
    ok = r["rc"] != 0 and not r["success"] and r["terminal"] is not None and r["hello_txt"] is None
    return ok, rs, reqs


def case_c(cli, bin_dir, case_dir, status=429):
    rs, reqs = fail_case(cli, bin_dir, case_dir, status, 1, 2, env=NO_RETRY_ENV[cli])
    r1, r2 = rs
    ok = (r1["rc"] != 0 and not r1["success"] and r1["terminal"] is not None
          and r2["rc"] == 0 and r2["success"] and r2["hello_txt"] == "hello from %s" % cli)
    return ok, rs, reqs


def case_c529(cli, bin_dir, case_dir):
    return case_c(cli, bin_dir, case_dir, status=529)


# Informational (not part of the required proof): does the CLI's OWN retry absorb one 429?
# Observed: Claude (default CLAUDE_CODE_MAX_RETRIES) retries once and succeeds; Gemini with
# general.maxAttempts=2 retries after ~5 s and succeeds; Codex never retries a 429 (even with
# request_max_retries>0), so its run fails. PASS means "behaved as observed above".
RETRY_EXPECTED = {"claude": True, "codex": False, "gemini": True}


def case_retry_default(cli, bin_dir, case_dir):
    kw = {"codex": {"retries": 4}, "gemini": {"max_attempts": 2}, "claude": {}}[cli]
    rs, reqs = fail_case(cli, bin_dir, case_dir, 429, 1, 1, env={}, **kw)
    return rs[0]["success"] == RETRY_EXPECTED[cli], rs, reqs


CASES = {"multi": case_multi, "a": case_a, "b": case_b, "c": case_c, "c529": case_c529, "retry": case_retry_default}
DEFAULT_CASES = {"claude": ["a", "b", "c", "c529", "multi"], "codex": ["a", "b", "c", "multi"],
                 "gemini": ["a", "b", "c", "multi"]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", default="/tmp/npmtest/node_modules/.bin")
    ap.add_argument("--cli", default="claude,codex,gemini")
    ap.add_argument("--case", default=None, help="comma list of a,b,c,c529,retry (default: the required ones)")
    ap.add_argument("--workroot", default=None)
    ap.add_argument("--keep", action="store_true", help="keep the work root")
    ap.add_argument("--args", action="append", default=[], metavar="CLI=ARGS",
                    help="extra CLI arguments, e.g. --args codex='-m gpt-5.5' --args gemini='-m gemini-2.5-flash'")
    args = ap.parse_args()
    for a in args.args:
        cli, _, rest = a.partition("=")
        EXTRA_ARGS[cli] = shlex.split(rest)
    root = args.workroot or tempfile.mkdtemp(prefix="model_server_check_")
    os.makedirs(root, exist_ok=True)
    all_ok = True
    report = []
    for cli in args.cli.split(","):
        for case in (args.case.split(",") if args.case else DEFAULT_CASES[cli]):
            case_dir = os.path.join(root, cli, case)
            shutil.rmtree(case_dir, ignore_errors=True)
            os.makedirs(case_dir)
            ok, runs, reqs = CASES[case](cli, args.bin_dir, case_dir)
            all_ok &= ok
            reqsum = ["%s %s rule=%s -> %s" % (q["method"], q["path"], q["rule"], q["status"]) for q in reqs]
            report.append({"cli": cli, "case": case, "ok": ok, "runs": runs, "requests": reqsum})
            print("%-6s %-5s %s" % (cli, case, "PASS" if ok else "FAIL"))
            for i, r in enumerate(runs):
                print("    run%d rc=%s %.2fs %s success=%s retries=%s tools=%s hello.txt=%r" % (
                    i + 1, r["rc"], r["seconds"], r["terminal"], r["success"], r["retries"], r["tools"],
                    r["hello_txt"]))
                print("         text=%r error=%r usage(in,out)=%s" % (r["text"], r["error"], r.get("usage")))
            for q in reqsum:
                print("    server: " + q)
            sys.stdout.flush()
    with open(os.path.join(root, "results.json"), "w") as f:
        json.dump(report, f, indent=1)
    print("work root: %s" % root)
    print("ALL PASS" if all_ok else "SOME FAILED")
    if not args.keep and args.workroot is None and all_ok:
        shutil.rmtree(root, ignore_errors=True)
    sys.exit(0 if all_ok else 1)


if __name__ == "__main__":
    main()
