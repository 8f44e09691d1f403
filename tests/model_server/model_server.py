#!/usr/bin/env python3
"""Scripted fake model endpoint for driving the real agent CLIs in tests.

One server speaks all three wire protocols:

  * Anthropic Messages API  (Claude Code):  HEAD /, POST /v1/messages[?beta=true],
                                            POST /v1/messages/count_tokens
  * OpenAI Responses API    (Codex CLI):    POST /v1/responses (SSE), GET /v1/models
  * Gemini API v1beta       (Gemini CLI):   POST /v1beta/models/<m>:streamGenerateContent?alt=sse,
                                            :generateContent, :countTokens

Usage:
    python3 model_server.py --scenario SCENARIO.json --log REQUESTS.jsonl [--port 0]

Binds 127.0.0.1 only. The first stdout line is exactly `listening <port>`.
Standard library only (Python 3.11). See README.md next to this file for the
scenario format and for how each CLI must be configured.
"""

import argparse
import gzip
import json
import re
import sys
import threading
import time
import uuid
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

# --------------------------------------------------------------------------------------
# Scenario state
# --------------------------------------------------------------------------------------

# Canned answers for calls that carry no tools (Claude title generation, Gemini routing
# classifier / next-speaker check). They are never matched against scenario rules.
CANNED_TEXT = "OK"
# Gemini side calls ask for JSON following various schemas; this object satisfies all of
# the ones in gemini-cli 0.61 (routing classifiers, next-speaker check) because unknown
# keys are ignored by their parsers.
GEMINI_CANNED_JSON = {
    "reasoning": "Simple request.",
    "model_choice": "flash",
    "complexity_reasoning": "Simple request.",
    "complexity_score": 10,
    "next_speaker": "user",
}
NO_RULE_TEXT = "[model_server] no scenario rule matched this request"


def fill_schema(schema, depth=0):
    """Minimal value satisfying a JSON schema (used for side calls that ask for JSON,
    e.g. Claude's session-title call: {"title": string})."""
    if not isinstance(schema, dict) or depth > 6:
        return "model_server"
    if schema.get("enum"):
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    t = schema.get("type")
    if isinstance(t, list):
        t = t[0] if t else "string"
    t = str(t or ("object" if "properties" in schema else "string")).lower()
    if t == "object":
        props = schema.get("properties") or {}
        keys = schema.get("required") or list(props)
        return {k: fill_schema(props.get(k, {}), depth + 1) for k in keys}
    if t == "array":
        return []
    if t in ("integer", "number"):
        return schema.get("minimum", 1)
    if t == "boolean":
        return False
    if t == "null":
        return None
    return "Model server session"


class Scenario:
    def __init__(self, data):
        if isinstance(data, list):  # bare list of steps = one catch-all rule
            data = {"rules": [{"name": "default", "steps": data}]}
        self.rules = data.get("rules", [])
        for i, rule in enumerate(self.rules):
            rule.setdefault("name", "rule%d" % i)
            if not rule.get("steps"):
                rule["steps"] = [{"text": "Done."}]
        self.lock = threading.Lock()
        self.fail_counts = {}  # rule name -> failures already served

    def pick(self, text):
        for rule in self.rules:
            m = rule.get("match")
            if m is None or m in text:
                return rule
        return None

    def should_fail(self, rule):
        """Returns the failFirst dict if this request must fail, else None."""
        ff = rule.get("failFirst")
        if not ff:
            return None
        count = int(ff.get("count", 1))
        with self.lock:
            done = self.fail_counts.get(rule["name"], 0)
            if count < 0 or done < count:
                self.fail_counts[rule["name"]] = done + 1
                return ff
        return None


def step_for(rule, index):
    steps = rule["steps"]
    return steps[min(index, len(steps) - 1)]


def est_tokens(s):
    return max(1, len(s) // 4)


def usage_for(step, req_text_len, out_text):
    """Returns (input_tokens, output_tokens, cached_tokens)."""
    u = step.get("usage") or {}
    inp = int(u.get("input_tokens", max(1, req_text_len // 4)))
    out = int(u.get("output_tokens", est_tokens(out_text) + 5))
    cached = int(u.get("cached_tokens", 0))
    return inp, out, cached


def chunks(text, n=3):
    """Split text into up to n roughly equal non-empty pieces (to exercise delta joining)."""
    if len(text) < n * 2:
        return [text]
    size = -(-len(text) // n)
    return [text[i:i + size] for i in range(0, len(text), size)]


def new_id(prefix):
    return prefix + uuid.uuid4().hex[:24]


# --------------------------------------------------------------------------------------
# Error bodies
# --------------------------------------------------------------------------------------

ANTHROPIC_ERR = {
    400: ("invalid_request_error", "Invalid request (model_server)."),
    401: ("authentication_error", "invalid x-api-key"),
    403: ("permission_error", "Your API key does not have permission to use the specified resource."),
    404: ("not_found_error", "The requested resource could not be found."),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "This request would exceed your organization's rate limit. Please try again later."),
    500: ("api_error", "Internal server error"),
    503: ("overloaded_error", "Overloaded"),
    529: ("overloaded_error", "Overloaded"),
}
OPENAI_ERR = {
    400: ("invalid_request_error", "invalid_value", "Invalid request (model_server)."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("invalid_request_error", "unsupported_country_region_territory", "Forbidden."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist or you do not have access to it."),
    429: ("requests", "rate_limit_exceeded",
          "Rate limit reached for requests per min (RPM): Limit 3, Used 3, Requested 1. Please try again in 20s."),
    500: ("server_error", None, "The server had an error while processing your request. Sorry about that!"),
    502: ("server_error", None, "Bad gateway."),
    503: ("server_error", None, "The engine is currently overloaded, please try again later"),
    529: ("server_error", None, "The engine is currently overloaded, please try again later"),
}
GEMINI_ERR = {
    400: ("INVALID_ARGUMENT", "Request contains an invalid argument."),
    401: ("UNAUTHENTICATED", "Request had invalid authentication credentials."),
    403: ("PERMISSION_DENIED", "Method doesn't allow unregistered callers."),
    404: ("NOT_FOUND", "Requested entity was not found."),
    429: ("RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota)."),
    500: ("INTERNAL", "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting"),
    503: ("UNAVAILABLE", "The model is overloaded. Please try again later."),
    504: ("DEADLINE_EXCEEDED", "The request timed out. Please try again."),
    529: ("UNAVAILABLE", "The model is overloaded. Please try again later."),
}


def error_body(provider, status, message=None):
    if provider == "anthropic":
        etype, msg = ANTHROPIC_ERR.get(status, ("api_error" if status >= 500 else "invalid_request_error",
                                                "Error (model_server)."))
        return {"type": "error", "error": {"type": etype, "message": message or msg},
                "request_id": new_id("req_")}
    if provider == "openai":
        etype, code, msg = OPENAI_ERR.get(status, ("server_error" if status >= 500 else "invalid_request_error",
                                                   None, "Error (model_server)."))
        return {"error": {"message": message or msg, "type": etype, "param": None, "code": code}}
    gstatus, msg = GEMINI_ERR.get(status, ("INTERNAL" if status >= 500 else "FAILED_PRECONDITION",
                                           "Error (model_server)."))
    return {"error": {"code": status, "message": message or msg, "status": gstatus}}


# --------------------------------------------------------------------------------------
# Request text extraction / step index
# --------------------------------------------------------------------------------------

def _texts_from_content(content, text_keys=("text",)):
    out = []
    if isinstance(content, str):
        out.append(content)
    elif isinstance(content, list):
        for block in content:
            if isinstance(block, str):
                out.append(block)
            elif isinstance(block, dict) and block.get("type") in (None, "text", "input_text"):
                t = block.get("text")
                if isinstance(t, str):
                    out.append(t)
    return out


def anthropic_text(body):
    parts = _texts_from_content(body.get("system"))
    for m in body.get("messages") or []:
        if m.get("role") in ("user", "system"):
            parts += _texts_from_content(m.get("content"))
    return "\n".join(parts)


def anthropic_step(body):
    return sum(1 for m in body.get("messages") or [] if m.get("role") == "assistant")


def openai_text(body):
    parts = []
    if isinstance(body.get("instructions"), str):
        parts.append(body["instructions"])
    inp = body.get("input")
    if isinstance(inp, str):
        parts.append(inp)
    elif isinstance(inp, list):
        for item in inp:
            if not isinstance(item, dict):
                continue
            if item.get("type") in (None, "message") and item.get("role") in ("user", "developer", "system"):
                parts += _texts_from_content(item.get("content"))
    return "\n".join(parts)


def openai_step(body):
    inp = body.get("input")
    if not isinstance(inp, list):
        return 0
    return sum(1 for it in inp if isinstance(it, dict) and str(it.get("type", "")).endswith("_call_output"))


def openai_tool_names(body):
    """Names of all tools offered, from body.tools and from `additional_tools` input items
    (Codex's default model gets its tools that way, inside namespaces)."""
    names = set()

    def walk(tools):
        for t in tools or []:
            if not isinstance(t, dict):
                continue
            if t.get("name"):
                names.add(t["name"])
            if t.get("type") in ("web_search", "tool_search", "local_shell"):
                names.add(t["type"])
            walk(t.get("tools"))

    walk(body.get("tools"))
    inp = body.get("input")
    if isinstance(inp, list):
        for it in inp:
            if isinstance(it, dict) and it.get("type") == "additional_tools":
                walk(it.get("tools"))
    return names


def gemini_text(body):
    parts = []
    si = body.get("systemInstruction") or body.get("system_instruction")
    if isinstance(si, dict):
        parts += [p.get("text") for p in si.get("parts") or [] if isinstance(p, dict) and isinstance(p.get("text"), str)]
    elif isinstance(si, str):
        parts.append(si)
    for c in body.get("contents") or []:
        if isinstance(c, dict) and c.get("role", "user") == "user":
            parts += [p.get("text") for p in c.get("parts") or []
                      if isinstance(p, dict) and isinstance(p.get("text"), str)]
    return "\n".join(parts)


def gemini_step(body):
    n = 0
    for c in body.get("contents") or []:
        if isinstance(c, dict):
            n += sum(1 for p in c.get("parts") or [] if isinstance(p, dict) and "functionResponse" in p)
    return n


def gemini_has_tools(body):
    for t in body.get("tools") or []:
        if isinstance(t, dict) and (t.get("functionDeclarations") or t.get("function_declarations")):
            return True
    return False


# --------------------------------------------------------------------------------------
# Response builders
# --------------------------------------------------------------------------------------

def sse(event, data):
    return ("event: %s\ndata: %s\n\n" % (event, json.dumps(data))).encode()


def anthropic_message(body, step, req_len):
    """Returns (message_dict, list_of_content_blocks) for a step."""
    blocks = []
    text = step.get("text")
    if "shell" in step:
        if text:
            blocks.append({"type": "text", "text": text})
        blocks.append({"type": "tool_use", "id": new_id("toolu_"), "name": "Bash",
                       "input": {"command": step["shell"], "description": "Run a shell command"}})
        stop = "tool_use"
        out_text = (text or "") + json.dumps(step["shell"])
    else:
        text = text if text is not None else "Done."
        blocks.append({"type": "text", "text": text})
        stop = "end_turn"
        out_text = text
    inp, out, cached = usage_for(step, req_len, out_text)
    usage = {"input_tokens": inp, "cache_creation_input_tokens": 0,
             "cache_read_input_tokens": cached, "output_tokens": out,
             "service_tier": "standard"}
    msg = {"id": new_id("msg_"), "type": "message", "role": "assistant",
           "model": body.get("model") or "claude-model-server", "content": blocks,
           "stop_reason": stop, "stop_sequence": None, "usage": usage}
    return msg


def anthropic_sse(msg):
    start = dict(msg)
    start["content"] = []
    start["stop_reason"] = None
    start_usage = dict(msg["usage"])
    start_usage["output_tokens"] = 1
    start["usage"] = start_usage
    out = [sse("message_start", {"type": "message_start", "message": start}),
           sse("ping", {"type": "ping"})]
    for i, b in enumerate(msg["content"]):
        if b["type"] == "text":
            out.append(sse("content_block_start", {"type": "content_block_start", "index": i,
                                                   "content_block": {"type": "text", "text": ""}}))
            for piece in chunks(b["text"]):
                out.append(sse("content_block_delta", {"type": "content_block_delta", "index": i,
                                                       "delta": {"type": "text_delta", "text": piece}}))
        else:
            out.append(sse("content_block_start", {"type": "content_block_start", "index": i,
                                                   "content_block": {"type": "tool_use", "id": b["id"],
                                                                     "name": b["name"], "input": {}}}))
            out.append(sse("content_block_delta", {"type": "content_block_delta", "index": i,
                                                   "delta": {"type": "input_json_delta",
                                                             "partial_json": json.dumps(b["input"])}}))
        out.append(sse("content_block_stop", {"type": "content_block_stop", "index": i}))
    u = msg["usage"]
    out.append(sse("message_delta", {"type": "message_delta",
                                     "delta": {"stop_reason": msg["stop_reason"], "stop_sequence": None},
                                     "usage": {"input_tokens": u["input_tokens"],
                                               "cache_creation_input_tokens": 0,
                                               "cache_read_input_tokens": u["cache_read_input_tokens"],
                                               "output_tokens": u["output_tokens"]}}))
    out.append(sse("message_stop", {"type": "message_stop"}))
    return b"".join(out)


def openai_events(body, step, req_len):
    resp_id = new_id("resp_")
    model = body.get("model") or "gpt-model-server"
    created = int(time.time())
    items = []
    text = step.get("text")
    if "shell" in step:
        if text:
            items.append({"type": "message", "id": new_id("msg_"), "role": "assistant", "status": "completed",
                          "content": [{"type": "output_text", "text": text, "annotations": []}]})
        names = openai_tool_names(body)
        if "exec_command" in names or "exec" not in names:
            # Classic tool set (e.g. -m gpt-5.5): unified-exec function `exec_command`.
            items.append({"type": "function_call", "id": new_id("fc_"), "call_id": new_id("call_"),
                          "name": "exec_command", "arguments": json.dumps({"cmd": step["shell"]}),
                          "status": "completed"})
        else:
            # "Code mode" (Codex's default model): a freeform custom tool `exec` that runs
            # JavaScript; nested tools are reachable as `tools.<name>(...)`.
            js = ("const r = await tools.exec_command({cmd: %s});\n"
                  "text(typeof r === 'string' ? r : (r.output ?? JSON.stringify(r)));\n"
                  % json.dumps(step["shell"]))
            items.append({"type": "custom_tool_call", "id": new_id("ctc_"), "call_id": new_id("call_"),
                          "name": "exec", "input": js, "status": "completed"})
        out_text = (text or "") + json.dumps(step["shell"])
    else:
        text = text if text is not None else "Done."
        items.append({"type": "message", "id": new_id("msg_"), "role": "assistant", "status": "completed",
                      "content": [{"type": "output_text", "text": text, "annotations": []}]})
        out_text = text
    inp, out, cached = usage_for(step, req_len, out_text)
    base = {"id": resp_id, "object": "response", "created_at": created, "model": model,
            "status": "in_progress", "output": []}
    ev = [("response.created", {"type": "response.created", "response": base}),
          ("response.in_progress", {"type": "response.in_progress", "response": base})]
    for idx, item in enumerate(items):
        if item["type"] == "message":
            empty = dict(item, status="in_progress", content=[])
            ev.append(("response.output_item.added", {"type": "response.output_item.added",
                                                      "output_index": idx, "item": empty}))
            t = item["content"][0]["text"]
            ev.append(("response.content_part.added", {"type": "response.content_part.added",
                                                       "item_id": item["id"], "output_index": idx,
                                                       "content_index": 0,
                                                       "part": {"type": "output_text", "text": "",
                                                                "annotations": []}}))
            for piece in chunks(t):
                ev.append(("response.output_text.delta", {"type": "response.output_text.delta",
                                                          "item_id": item["id"], "output_index": idx,
                                                          "content_index": 0, "delta": piece}))
            ev.append(("response.output_text.done", {"type": "response.output_text.done",
                                                     "item_id": item["id"], "output_index": idx,
                                                     "content_index": 0, "text": t}))
            ev.append(("response.content_part.done", {"type": "response.content_part.done",
                                                      "item_id": item["id"], "output_index": idx,
                                                      "content_index": 0, "part": item["content"][0]}))
        elif item["type"] == "custom_tool_call":
            ev.append(("response.output_item.added", {"type": "response.output_item.added",
                                                      "output_index": idx,
                                                      "item": dict(item, status="in_progress", input="")}))
            ev.append(("response.custom_tool_call_input.delta",
                       {"type": "response.custom_tool_call_input.delta", "item_id": item["id"],
                        "output_index": idx, "delta": item["input"]}))
            ev.append(("response.custom_tool_call_input.done",
                       {"type": "response.custom_tool_call_input.done", "item_id": item["id"],
                        "output_index": idx, "input": item["input"]}))
        else:
            ev.append(("response.output_item.added", {"type": "response.output_item.added",
                                                      "output_index": idx,
                                                      "item": dict(item, status="in_progress", arguments="")}))
            ev.append(("response.function_call_arguments.delta",
                       {"type": "response.function_call_arguments.delta", "item_id": item["id"],
                        "output_index": idx, "delta": item["arguments"]}))
            ev.append(("response.function_call_arguments.done",
                       {"type": "response.function_call_arguments.done", "item_id": item["id"],
                        "output_index": idx, "arguments": item["arguments"]}))
        ev.append(("response.output_item.done", {"type": "response.output_item.done",
                                                 "output_index": idx, "item": item}))
    usage = {"input_tokens": inp, "input_tokens_details": {"cached_tokens": cached},
             "output_tokens": out, "output_tokens_details": {"reasoning_tokens": 0},
             "total_tokens": inp + out}
    done = dict(base, status="completed", output=items, usage=usage)
    ev.append(("response.completed", {"type": "response.completed", "response": done}))
    return ev, done


def gemini_chunks(body, model, step, req_len):
    """Returns a list of GenerateContentResponse dicts (the last one carries finishReason)."""
    resp_id = uuid.uuid4().hex[:22]
    text = step.get("text")
    parts_seq = []
    if "shell" in step:
        if text:
            parts_seq.append([{"text": text}])
        parts_seq.append([{"functionCall": {"name": "run_shell_command",
                                            "args": {"command": step["shell"],
                                                     "description": "Run a shell command"}}}])
        out_text = (text or "") + json.dumps(step["shell"])
    else:
        text = text if text is not None else "Done."
        parts_seq = [[{"text": piece}] for piece in chunks(text)]
        out_text = text
    inp, out, cached = usage_for(step, req_len, out_text)
    usage = {"promptTokenCount": inp, "candidatesTokenCount": out, "totalTokenCount": inp + out}
    if cached:
        usage["cachedContentTokenCount"] = cached
    res = []
    for i, parts in enumerate(parts_seq):
        cand = {"content": {"role": "model", "parts": parts}, "index": 0}
        last = i == len(parts_seq) - 1
        if last:
            cand["finishReason"] = "STOP"
        r = {"candidates": [cand], "modelVersion": model, "responseId": resp_id}
        if last:
            r["usageMetadata"] = usage
        res.append(r)
    return res


def merge_gemini(chunks_):
    parts = []
    for c in chunks_:
        for p in c["candidates"][0]["content"]["parts"]:
            if "text" in p and parts and set(parts[-1]) == {"text"}:
                parts[-1] = {"text": parts[-1]["text"] + p["text"]}  # join text chunks
            else:
                parts.append(p)
    last = dict(chunks_[-1])
    cand = dict(last["candidates"][0])
    cand["content"] = {"role": "model", "parts": parts}
    last["candidates"] = [cand]
    return last


# --------------------------------------------------------------------------------------
# HTTP handler
# --------------------------------------------------------------------------------------

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "model_server/1.0"
    sys_version = ""

    def log_message(self, fmt, *args):  # keep stderr quiet
        pass

    # ---- plumbing ----
    def _read_body(self):
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            data = b""
            while True:
                line = self.rfile.readline()
                n = int(line.strip().split(b";")[0] or b"0", 16)
                if n == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                data += self.rfile.read(n)
                self.rfile.readline()
        else:
            n = int(self.headers.get("Content-Length") or 0)
            data = self.rfile.read(n) if n else b""
        enc = (self.headers.get("Content-Encoding") or "").lower()
        try:
            if enc == "gzip":
                data = gzip.decompress(data)
            elif enc == "deflate":
                data = zlib.decompress(data)
        except Exception:
            pass
        return data

    def _log(self, body, rule, status):
        entry = {"method": self.command, "path": self.path, "body": body,
                 "rule": rule, "status": status}
        line = json.dumps(entry) + "\n"
        with self.server.log_lock:
            self.server.log_file.write(line)
            self.server.log_file.flush()

    def _send(self, status, payload, ctype="application/json", headers=None):
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("request-id", new_id("req_"))
        self.send_header("x-request-id", new_id("req_"))
        for k, v in (headers or {}).items():
            self.send_header(k, str(v))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
            self.wfile.flush()

    # ---- verbs ----
    def do_HEAD(self):
        self._log(None, None, 200)
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self):
        path = urlsplit(self.path).path
        if path in ("/v1/models", "/models"):
            self._log(None, None, 200)
            self._send(200, {"object": "list", "models": [],
                             "data": [{"id": "gpt-5.5", "object": "model", "created": 0,
                                       "owned_by": "model_server"}]})
            return
        if path == "/":
            self._log(None, None, 200)
            self._send(200, {"ok": True})
            return
        self._not_found(None)

    def do_POST(self):
        raw = self._read_body()
        try:
            body = json.loads(raw) if raw else None
        except Exception:
            body = None
        path = urlsplit(self.path).path
        try:
            if path == "/v1/messages/count_tokens":
                n = est_tokens(json.dumps(body)) if body else 1
                self._log(body, None, 200)
                self._send(200, {"input_tokens": n})
            elif path == "/v1/messages":
                self._anthropic(body)
            elif path in ("/v1/responses", "/responses"):
                self._openai(body)
            elif path.startswith("/v1beta/models/") or path.startswith("/v1/models/"):
                self._gemini(path, body)
            else:
                self._not_found(body)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _not_found(self, body):
        self._log(body, None, 404)
        self._send(404, {"error": {"code": 404, "type": "not_found_error", "status": "NOT_FOUND",
                                   "message": "model_server: no route for %s %s" % (self.command, self.path)}})

    # ---- common agent-loop logic ----
    def _resolve(self, provider, body, text, step_index):
        """Returns (rule_name, step) or sends an error and returns None."""
        rule = self.server.scenario.pick(text)
        if rule is None:
            return None, {"text": NO_RULE_TEXT}
        ff = self.server.scenario.should_fail(rule)
        if ff:
            status = int(ff.get("status", 500))
            payload = error_body(provider, status, ff.get("message"))
            headers = dict(ff.get("headers") or {})
            if ff.get("delayMs"):
                time.sleep(float(ff["delayMs"]) / 1000.0)
            self._log(body, rule["name"], status)
            self._send(status, payload, headers=headers)
            return rule["name"], None
        step = step_for(rule, step_index)
        if step.get("delayMs"):
            time.sleep(float(step["delayMs"]) / 1000.0)
        return rule["name"], step

    def _anthropic(self, body):
        if not isinstance(body, dict):
            self._log(body, None, 400)
            self._send(400, error_body("anthropic", 400, "model_server: body is not JSON"))
            return
        req_len = len(json.dumps(body))
        if not body.get("tools"):
            fmt = (body.get("output_config") or {}).get("format") or {}
            canned = json.dumps(fill_schema(fmt.get("schema"))) if fmt.get("type") == "json_schema" else CANNED_TEXT
            rule_name, step = None, {"text": canned, "usage": {"input_tokens": max(1, req_len // 4),
                                                              "output_tokens": 10}}
        else:
            rule_name, step = self._resolve("anthropic", body, anthropic_text(body), anthropic_step(body))
            if step is None:
                return
        msg = anthropic_message(body, step, req_len)
        self._log(body, rule_name, 200)
        if body.get("stream"):
            self._send(200, anthropic_sse(msg), ctype="text/event-stream")
        else:
            self._send(200, msg)

    def _openai(self, body):
        if not isinstance(body, dict):
            self._log(body, None, 400)
            self._send(400, error_body("openai", 400, "model_server: body is not JSON"))
            return
        req_len = len(json.dumps(body))
        if not openai_tool_names(body):
            rule_name, step = None, {"text": CANNED_TEXT}
        else:
            rule_name, step = self._resolve("openai", body, openai_text(body), openai_step(body))
            if step is None:
                return
        events, final = openai_events(body, step, req_len)
        self._log(body, rule_name, 200)
        if body.get("stream", False):
            self._send(200, b"".join(sse(name, data) for name, data in events), ctype="text/event-stream")
        else:
            self._send(200, final)

    def _gemini(self, path, body):
        m = re.match(r"^/v1(?:beta)?/models/([^:/]+):(\w+)$", path)
        if not m:
            self._not_found(body)
            return
        model, method = m.group(1), m.group(2)
        if method == "countTokens":
            n = est_tokens(json.dumps(body)) if body else 1
            self._log(body, None, 200)
            self._send(200, {"totalTokens": n})
            return
        if method not in ("generateContent", "streamGenerateContent"):
            self._not_found(body)
            return
        if not isinstance(body, dict):
            self._log(body, None, 400)
            self._send(400, error_body("gemini", 400, "model_server: body is not JSON"))
            return
        req_len = len(json.dumps(body))
        if not gemini_has_tools(body):
            rule_name = None
            wants_json = (body.get("generationConfig") or {}).get("responseMimeType") == "application/json"
            canned = json.dumps(GEMINI_CANNED_JSON) if (wants_json or method == "generateContent") else CANNED_TEXT
            step = {"text": canned, "usage": {"input_tokens": max(1, req_len // 4), "output_tokens": 20}}
        else:
            rule_name, step = self._resolve("gemini", body, gemini_text(body), gemini_step(body))
            if step is None:
                return
        res = gemini_chunks(body, model, step, req_len)
        self._log(body, rule_name, 200)
        if method == "streamGenerateContent":
            data = b"".join(("data: %s\r\n\r\n" % json.dumps(r)).encode() for r in res)
            self._send(200, data, ctype="text/event-stream")
        else:
            self._send(200, merge_gemini(res))


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", required=True, help="scenario JSON file")
    ap.add_argument("--log", required=True, help="JSONL file; one line appended per HTTP request")
    ap.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0 = any free port)")
    args = ap.parse_args()

    with open(args.scenario) as f:
        scenario = Scenario(json.load(f))
    httpd = Server(("127.0.0.1", args.port), Handler)
    httpd.scenario = scenario
    httpd.log_lock = threading.Lock()
    httpd.log_file = open(args.log, "a", encoding="utf-8")
    sys.stdout.write("listening %d\n" % httpd.server_address[1])
    sys.stdout.flush()
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        httpd.log_file.close()


if __name__ == "__main__":
    main()
