#!/usr/bin/env python3
"""Runs README.md's grpcurl cookbook against real services and checks it.

Usage: scripts/check-cookbook.py [--list] [README.md]
  --list  prints the commands it would run (rewritten) and runs none

scripts/examples.sh runs it with the services on free ports; it also works
against `scripts/run-local.sh` with no environment set. Python 3 standard
library only; needs `bash` and `grpcurl` on PATH.

Environment:
  ORDER_ADDR    host:port of order-service   (default localhost:50051)
  PAYMENT_ADDR  host:port of payment-service (default localhost:50052)

What is run
  * Every fenced block tagged sh, bash or shell that contains at
    least one `grpcurl` command. Each of its commands runs, in README order,
    in ONE bash session (`set -o pipefail`), so shell variables set by one
    command (ORDER_ID=$(grpcurl ... | python3 ...)) are seen by later ones.
    A command is a logical line: backslash continuations are joined, and a
    line that leaves a quote or $( ... ) open takes in the lines after it.
    Comment lines and a leading `$ ` prompt are ignored. Blocks with no
    grpcurl (scripts/run-local.sh, scripts/test.sh) are skipped.
  * In untagged or text fenced blocks (printed output, such as the request
    that scripts/run-local.sh prints), only lines that start with `grpcurl `
    run.
  * `localhost:50051` / `localhost:50052` are replaced by ORDER_ADDR /
    PAYMENT_ADDR.
  * Every non-empty request id ("request_id":"r-1", also inside
    double-quoted JSON) gets a per-run prefix, `cookbook-<run>-r-1`, so the
    cookbook's orders never collide with those of other checks run against
    the same services (a request id is an idempotency key: reusing one with
    other content fails with ALREADY_EXISTS). Within one run the prefix is
    the same, so the cookbook's deliberate repeats still name one order.

What is expected
  * Every command must exit 0, except those the README shows failing:
    - a command in a run block whose next fenced block (only blank lines
      between) starts with a line `ERROR:`, as grpcurl prints a failed RPC,
      is the block's LAST command, and is expected to fail with the
      `Code: <Code>` shown in that output block. When the block also shows
      a `Message: ...` line that the service no longer prints verbatim, a
      warning says so (the README is stale), without failing the command;
    - a comment line `# expect: <Code>` (e.g. `# expect: InvalidArgument`,
      grpcurl's spelling of gRPC codes) inside a run block marks the next
      command as failing with that code.
    An expected failure must exit non-zero and print `Code: <Code>`.

Prints one line per command: `ok` or `FAILED`, the README line, and the
command (continuations collapsed); a failure is followed by its output.
Exits 1 when any command failed, 2 when it cannot run at all.
"""

import os
import re
import select
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN_TAGS = {"sh", "bash", "shell"}
OUTPUT_TAGS = {"", "text", "txt", "output"}
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})\s*(?P<tag>[\w+-]*)")
EXPECT = re.compile(r"^#\s*expect:\s*(?P<code>[A-Za-z]+)\s*$")
GRPCURL = re.compile(r"(^|[\s(|;&])grpcurl\s")
# "request_id":"x" in single-quoted JSON and \"request_id\":\"x\" in
# double-quoted JSON (also camelCase requestId).
REQUEST_ID = re.compile(r'(\\?"(?:request_id|requestId)\\?"\s*:\s*\\?")([^"\\]+)')
COMMAND_TIMEOUT = 60  # seconds for one command


class Block:
    """A fenced code block: its tag, first content line number and lines."""

    def __init__(self, tag, line, lines):
        self.tag = tag
        self.line = line
        self.lines = lines
        self.next_block = None  # the fenced block right after, if adjacent


class Command:
    """One logical command of the cookbook."""

    def __init__(self, line, text):
        self.line = line  # README line number of its first line
        self.text = text  # as in the README (continuations kept)
        self.expect = None  # gRPC code name it must fail with, or None
        self.expect_message = None  # the README's `Message:` line, if any

    def one_line(self):
        return re.sub(r"\\\n\s*", "", self.text).replace("\n", " ")


def parse_blocks(lines):
    blocks = []
    previous_end = None  # index of the closing fence of the previous block
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, tag = len(m.group("indent")), m.group("fence"), m.group("tag").lower()
        start = i
        body = []
        i += 1
        while i < len(lines):
            stripped = lines[i].strip()
            if stripped.startswith(fence) and stripped.strip(fence[0]) == "":
                break
            line = lines[i]
            # Drop the fence's own indentation (blocks inside list items).
            body.append(line[indent:] if line[:indent].strip() == "" else line.lstrip())
            i += 1
        block = Block(tag, start + 2, body)  # 1-based number of its first line
        if blocks and all(not l.strip() for l in lines[previous_end + 1 : start]):
            blocks[-1].next_block = block
        blocks.append(block)
        previous_end = i
        i += 1
    return blocks


def complete(text):
    """Whether bash can parse `text` as complete commands."""
    result = subprocess.run(
        ["bash", "-n", "-c", text], capture_output=True, text=True, check=False
    )
    return result.returncode == 0


def block_commands(block):
    """The commands of a run block, with `# expect:` markers applied."""
    commands = []
    expect = None
    pending = []  # (line number, text) of an unfinished command
    for offset, raw in enumerate(block.lines):
        number = block.line + offset
        line = raw.rstrip()
        if not pending:
            stripped = line.strip()
            if not stripped:
                continue
            m = EXPECT.match(stripped)
            if m:
                expect = m.group("code")
                continue
            if stripped.startswith("#"):
                continue
            if stripped.startswith("$ "):
                line = stripped[2:]
        pending.append((number, line))
        text = "\n".join(t for _, t in pending)
        if line.endswith("\\") or not complete(text):
            continue
        command = Command(pending[0][0], text)
        command.expect, expect = expect, None
        commands.append(command)
        pending = []
    if pending:
        commands.append(Command(pending[0][0], "\n".join(t for _, t in pending)))
    return commands


def output_commands(block):
    """grpcurl commands shown in an output block (lines starting `grpcurl `)."""
    return [
        Command(block.line + offset, raw.strip())
        for offset, raw in enumerate(block.lines)
        if raw.strip().startswith("grpcurl ")
    ]


def expected_error(block):
    """(code, message) when the block after `block` shows a grpcurl error."""
    shown = block.next_block
    if shown is None or shown.tag not in OUTPUT_TAGS:
        return None
    content = [l for l in shown.lines if l.strip()]
    if not content or content[0].strip() != "ERROR:":
        return None
    code = message = None
    for l in content[1:]:
        s = l.strip()
        if s.startswith("Code:"):
            code = s[len("Code:") :].strip()
        elif s.startswith("Message:"):
            message = s
    return (code or "", message)


def extract(readme_path):
    with open(readme_path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    commands = []
    for block in parse_blocks(lines):
        if block.tag in RUN_TAGS:
            found = block_commands(block)
            if not any(GRPCURL.search(" " + c.text) for c in found):
                continue
            error = expected_error(block)
            if error and found:
                found[-1].expect, found[-1].expect_message = error
            commands.extend(found)
        elif block.tag in OUTPUT_TAGS:
            commands.extend(output_commands(block))
    return commands


def rewrite(text, order_addr, payment_addr, prefix):
    text = text.replace("localhost:50051", order_addr)
    text = text.replace("localhost:50052", payment_addr)
    return REQUEST_ID.sub(lambda m: m.group(1) + prefix + m.group(2), text)


class Session:
    """One bash process; runs commands in it one at a time."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.proc = subprocess.Popen(
            ["bash", "--noprofile", "--norc"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            text=True,
            bufsize=1,
        )
        self.send("set -o pipefail\n")
        self.count = 0

    def send(self, text):
        self.proc.stdin.write(text)
        self.proc.stdin.flush()

    def run(self, text):
        """Runs `text` in the session; returns (exit status or None, output)."""
        self.count += 1
        out = os.path.join(self.workdir, f"{self.count}.out")
        marker = f"__cookbook_done_{self.count}_{uuid.uuid4().hex}"
        # eval keeps a syntax error from ending the session; stdin is
        # /dev/null so no command reads the session's own input.
        self.send(
            f"eval {shlex.quote(text)} </dev/null >{shlex.quote(out)} 2>&1\n"
            f"echo {marker} $?\n"
        )
        deadline = time.monotonic() + COMMAND_TIMEOUT
        status = None
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            ready, _, _ = select.select([self.proc.stdout], [], [], left)
            if not ready:
                break
            line = self.proc.stdout.readline()
            if not line:
                break  # the session ended
            if line.startswith(marker):
                status = int(line.split()[1])
                break
        try:
            with open(out, encoding="utf-8", errors="replace") as f:
                output = f.read()
        except OSError:
            output = ""
        if status is None:
            output += f"\n(no answer within {COMMAND_TIMEOUT} s, or the shell ended)"
        return status, output

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def verdict(command, status, output):
    """None when the command did what the README says, else why not."""
    if status is None:
        return "did not finish"
    if command.expect is None:
        return None if status == 0 else f"exit status {status}"
    if status == 0:
        return f"succeeded, but the README shows it failing with {command.expect}"
    if f"Code: {command.expect}" not in output:
        return f"expected `Code: {command.expect}` in its output"
    return None


def message_drift(command, output):
    """The README's `Message:` line when the real message differs, else None."""
    if command.expect is None or not command.expect_message:
        return None
    return None if command.expect_message in output else command.expect_message


def main(argv):
    args = argv[1:]
    listing = "--list" in args
    args = [a for a in args if a != "--list"]
    readme = args[0] if args else os.path.join(ROOT, "README.md")
    for tool in ("bash", "grpcurl"):
        if shutil.which(tool) is None:
            print(f"error: {tool} is not on PATH (scripts/install-tools.sh installs grpcurl)",
                  file=sys.stderr)
            return 2
    order_addr = os.environ.get("ORDER_ADDR") or "localhost:50051"
    payment_addr = os.environ.get("PAYMENT_ADDR") or "localhost:50052"
    prefix = f"cookbook-{uuid.uuid4().hex[:8]}-"
    commands = extract(readme)
    if not any(GRPCURL.search(" " + c.text) for c in commands):
        print(f"error: found no grpcurl command in {readme}", file=sys.stderr)
        return 2
    name = os.path.relpath(readme, os.getcwd())
    if listing:
        for command in commands:
            note = f"  # expect: {command.expect}" if command.expect else ""
            print(f"{name}:{command.line}{note}")
            print(rewrite(command.text, order_addr, payment_addr, prefix))
        return 0
    print(f"cookbook: {len(commands)} commands from {name}, orders at {order_addr}, "
          f"payments at {payment_addr}, request ids prefixed {prefix}")
    failed = 0
    warnings = 0
    with tempfile.TemporaryDirectory(prefix="cookbook-") as workdir:
        session = Session(workdir)
        try:
            for command in commands:
                status, output = session.run(
                    rewrite(command.text, order_addr, payment_addr, prefix)
                )
                problem = verdict(command, status, output)
                label = "ok" if problem is None else "FAILED"
                note = f" (expected {command.expect})" if command.expect else ""
                print(f"{label:6} {name}:{command.line}{note}  {command.one_line()}", flush=True)
                drift = message_drift(command, output) if problem is None else None
                if drift is not None:
                    warnings += 1
                    print(f"       warning: the README shows `{drift}`, but the service says:")
                    for line in output.rstrip("\n").split("\n"):
                        if line.strip().startswith("Message:"):
                            print(f"       | {line.strip()}")
                if problem is not None:
                    failed += 1
                    print(f"       {problem}; output:")
                    for line in output.rstrip("\n").split("\n"):
                        print(f"       | {line}")
                if status is None:
                    print("       the shell session is gone; stopping here")
                    failed += len(commands) - commands.index(command) - 1
                    break
        finally:
            session.close()
    if warnings:
        print(f"cookbook: {warnings} README error message(s) differ from the service's (warning only)")
    print(f"cookbook: {len(commands) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
