"""Interactive `quantkit chat` driven through a real pseudo-terminal, keys as a user types them: a multi-line
question, the streamed answer, /clear, Ctrl-C (\\x03, turned into SIGINT by the terminal) while an answer is
being written, Ctrl-C at the prompt, /exit.

The child's SIGINT disposition is set, not inherited: a Python program started with SIGINT ignored never gets
KeyboardInterrupt unless it installs a handler itself, so what these tests see must not depend on how pytest
was started (one test starts chat with SIGINT ignored on purpose)."""
from __future__ import annotations

import fcntl
import os
import re
import select
import signal
import subprocess
import sys
import termios
import time

import pytest

pytestmark = pytest.mark.slow

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")


class Terminal:
    """A child process on the slave side of a pty, as its controlling terminal; we hold the master."""

    def __init__(self, args: list[str], sigint=signal.SIG_DFL):
        """`sigint`: the SIGINT disposition the child starts with (SIG_IGN: as from a parent that ignores it)."""
        self.master, slave = os.openpty()
        env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "100", "LINES": "40"}
        env.pop("NO_COLOR", None)

        def controlling_tty():
            os.setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)
            signal.signal(signal.SIGINT, sigint)

        self.proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, env=env,
                                     preexec_fn=controlling_tty, close_fds=True)
        os.close(slave)
        self.screen = ""  # everything shown, escape sequences removed
        self.seen = 0  # how far expect() has consumed

    def _read(self, timeout: float) -> None:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if ready:
            try:
                data = os.read(self.master, 65536)
            except OSError:  # the child closed the terminal
                data = b""
            if not data and self.proc.poll() is not None:
                raise EOFError(self.screen[self.seen:])
            self.screen += ANSI.sub("", data.decode("utf-8", errors="replace"))

    def expect(self, pattern: str, timeout: float = 60) -> str:
        """Wait for `pattern` (a regex) after what was matched before; return the text up to its end."""
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        while True:
            m = regex.search(self.screen, self.seen)
            if m:
                text = self.screen[self.seen:m.end()]
                self.seen = m.end()
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {pattern!r}; the screen ends with:\n"
                                     f"{self.screen[-1500:]}")
            self._read(0.2)

    def send(self, text: str) -> None:
        os.write(self.master, text.encode())

    def interrupt_at_prompt(self) -> None:
        """Ctrl-C while input() waits. Not in the first instant: CPython's readline loop only looks at a SIGINT
        that interrupts its select(), and one landing between the prompt and the select() waits for a key."""
        time.sleep(0.5)
        self.send("\x03")

    def close(self) -> int:
        try:
            return self.proc.wait(timeout=30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            os.close(self.master)


PROMPT = r">>> $"
STATS = r"gen \d+ tok [\d.]+ tok/s · thought \d+ tok · answer \d+ tok[^\n]*\n"


def test_interactive_session(smollm2_gguf, tmp_path):
    term = Terminal([sys.executable, "-m", "quantkit", "chat", str(smollm2_gguf), "--threads", "1", "-ngl", "0",
                     "-n", "400", "--seed", "1", "--ctx", "1024"])
    try:
        banner = term.expect(PROMPT, timeout=120)
        assert "CPU, 1 threads" in banner and "0/31 layers on GPU" in banner and "ctx 1024" in banner
        assert "/exit" in banner  # the help line

        # a question typed on two lines, answered as it streams, then the turn's numbers
        term.send("What is the capital\\\r")
        term.expect(r"\.\.\. $")
        term.send("of France?\r")
        turn = term.expect(STATS, timeout=120)
        answer = turn.split("of France?", 1)[1].rsplit("prompt ", 1)[0]
        assert answer.strip(), turn
        term.expect(PROMPT)

        term.send("/clear\r")
        term.expect(r"\(conversation cleared\)")
        term.expect(PROMPT)

        # Ctrl-C as soon as the answer starts to appear: generation stops, the prompt comes back
        term.send("Write a very long story about a dragon and a knight.\r")
        term.expect(r"knight\.\n[^\n]*\w", timeout=120)  # the first streamed words
        term.send("\x03")
        stopped = term.expect(r"\[stopped\]", timeout=30)
        stats = term.expect(STATS, timeout=30)
        assert "stopped: interrupted" in stats, stopped + stats
        term.expect(PROMPT)

        # one Ctrl-C at the prompt only warns; the session goes on
        term.interrupt_at_prompt()
        term.expect(r"Ctrl-C again to exit")
        term.expect(PROMPT)

        transcript = tmp_path / "chat.md"
        term.send(f"/save {transcript}\r")
        term.expect(r"saved 1 turns")
        term.expect(PROMPT)
        text = transcript.read_text()
        assert "## User" in text and "dragon and a knight" in text and "stopped: interrupted" in text

        term.send("/exit\r")
        assert term.close() == 0
    finally:
        if term.proc.poll() is None:
            term.proc.kill()


def test_two_ctrl_c_at_the_prompt_exit(smollm2_gguf):
    term = Terminal([sys.executable, "-m", "quantkit", "chat", str(smollm2_gguf), "--threads", "1", "-ngl", "0",
                     "--ctx", "256"])
    try:
        term.expect(PROMPT, timeout=120)
        term.interrupt_at_prompt()
        term.expect(r"Ctrl-C again to exit")
        term.expect(PROMPT)
        term.interrupt_at_prompt()
        assert term.close() == 0
    finally:
        if term.proc.poll() is None:
            term.proc.kill()


def test_ctrl_c_works_when_started_with_sigint_ignored(smollm2_gguf):
    """chat installs its own SIGINT handling: started with SIGINT ignored, Ctrl-C still stops an answer, and
    twice at the prompt still exits."""
    term = Terminal([sys.executable, "-m", "quantkit", "chat", str(smollm2_gguf), "--threads", "1", "-ngl", "0",
                     "-n", "400", "--seed", "1", "--ctx", "1024"], sigint=signal.SIG_IGN)
    try:
        term.expect(PROMPT, timeout=120)
        term.send("Write a very long story about a dragon and a knight.\r")
        term.expect(r"knight\.\n[^\n]*\w", timeout=120)
        term.send("\x03")
        term.expect(r"\[stopped\]", timeout=30)
        assert "stopped: interrupted" in term.expect(STATS, timeout=30)
        term.expect(PROMPT)
        term.interrupt_at_prompt()
        term.expect(r"Ctrl-C again to exit")
        term.expect(PROMPT)
        term.interrupt_at_prompt()
        assert term.close() == 0
    finally:
        if term.proc.poll() is None:
            term.proc.kill()
