"""A real Postfix in front of and behind dlpgate, set up with deploy/postfix/content-filter.

    client --SMTP--> Postfix :IN --content_filter--> dlpgate serve :GW --> Postfix :REINJECT
           --relayhost--> aiosmtpd sink (the Internet)

Postfix runs as its own instance: config_directory, queue_directory and data_directory in a fresh
temporary directory, listening on 127.0.0.1 high ports only; the system's mail set-up is never read
or touched. The snippets under deploy/postfix/content-filter are used verbatim, their ports
substituted, so the documented set-up is the tested one.

Needs root (postfix start) and the Debian package `postfix` (.ci/run installs it). With CI=true the
test never skips.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Sink, free_port
from tests.conftest import send_ok as send
from tests.test_deploy_support import REPO, ServeProcess, mail, my_number_mail

POSTFIX = shutil.which("postfix") or "/usr/sbin/postfix"
SNIPPETS = REPO / "deploy" / "postfix" / "content-filter"
DELAY = 2.0

pytestmark = pytest.mark.postfix


def _can_run() -> str | None:
    """Why this machine cannot run the test, or None."""
    if not Path(POSTFIX).exists():
        return "Postfix is not installed (apt-get install postfix)"
    if os.geteuid() != 0:
        return "starting a Postfix instance needs root"
    try:
        import pwd

        pwd.getpwnam("postfix")
    except KeyError:
        return "no 'postfix' user (the postfix package creates it)"
    return None


if (_why := _can_run()) is not None and os.environ.get("CI") != "true":
    pytest.skip(_why, allow_module_level=True)


BASE_MAIN = """\
# --- test instance: its own directories, loopback high ports, nothing of the system's set-up
compatibility_level = 3.6
queue_directory = {root}/spool
data_directory = {root}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix.test
mydomain = postfix.test
myorigin = postfix.test
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
{relayhost}smtp_host_lookup = native
maillog_file = {root}/maillog
maillog_file_prefixes = {root}
minimal_backoff_time = 1s
maximal_backoff_time = 2s
queue_run_delay = 1s
smtpd_banner = $myhostname ESMTP
"""

BASE_MASTER = """\
{inbound} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def substitute(text: str, old: str, new: str) -> str:
    assert old in text, f"snippet no longer mentions {old}: update this test with it"
    return text.replace(old, new)


class PostfixInstance:
    """setup "content-filter": deploy/postfix/content-filter, the sink as relayhost (the Internet).
    setup "relayhost": deploy/postfix/relayhost; dlpgate itself delivers to the sink."""

    def __init__(self, gateway_port: int, sink_port: int, setup: str = "content-filter") -> None:
        # not under pytest's tmp_path: that is 0700 root, and Postfix's daemons run as `postfix`
        self.root = Path(tempfile.mkdtemp(prefix="dlpgate-postfix-", dir="/tmp"))  # TMPDIR may be 0700
        self.root.chmod(0o755)
        self.etc = self.root / "etc"
        self.inbound = free_port()
        self.reinject = free_port()
        self.etc.mkdir(mode=0o755)
        for d in ("spool", "data"):
            (self.root / d).mkdir(mode=0o755)
        shutil.chown(self.root / "data", user="postfix")
        snippets = SNIPPETS.parent / setup
        relay = f"# the Internet is the aiosmtpd sink\nrelayhost = [127.0.0.1]:{sink_port}\n"
        main = BASE_MAIN.format(root=self.root, relayhost=relay if setup == "content-filter" else "")
        main += f"\n# --- deploy/postfix/{setup}/main.cf\n"
        main += substitute((snippets / "main.cf").read_text(), "[127.0.0.1]:10025", f"[127.0.0.1]:{gateway_port}")
        master = BASE_MASTER.format(inbound=f"127.0.0.1:{self.inbound}") + "\n"
        if setup == "content-filter":
            master += substitute((snippets / "master.cf").read_text(), "127.0.0.1:10026",
                                 f"127.0.0.1:{self.reinject}")
        (self.etc / "main.cf").write_text(main)
        (self.etc / "master.cf").write_text(master)
        (self.root / "maillog").touch()

    def postfix(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([POSTFIX, "-c", str(self.etc), *args], capture_output=True, text=True, timeout=30)

    def start(self) -> None:
        for step in (("check",), ("start",)):
            r = self.postfix(*step)
            assert r.returncode == 0, f"postfix {step[0]}: {r.stdout}{r.stderr}{self.maillog()}"
        deadline = time.monotonic() + 10
        while not self.listening() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert self.listening(), self.maillog()

    def listening(self) -> bool:
        import socket

        with socket.socket() as s:
            s.settimeout(0.5)
            return s.connect_ex(("127.0.0.1", self.inbound)) == 0

    def stop(self) -> None:
        r = self.postfix("stop")
        if r.returncode != 0:
            self.postfix("abort")
        shutil.rmtree(self.root, ignore_errors=True)

    def maillog(self) -> str:
        try:
            return "\n--- Postfix maillog ---\n" + (self.root / "maillog").read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def postconf(self, name: str) -> str:
        r = subprocess.run(["postconf", "-c", str(self.etc), "-h", name], capture_output=True, text=True,
                           timeout=10)
        return r.stdout.strip()


@pytest.fixture
def chain(tmp_path: Path, sink: Sink) -> Iterator[tuple[PostfixInstance, ServeProcess]]:
    why = _can_run()
    assert why is None, f"CI=true: the Postfix test may not skip: {why}"
    # dlpgate delivers to Postfix's re-injection listener; ports are fixed before either starts
    gw = ServeProcess(tmp_path, upstream_port=0, delay=DELAY)
    pf = PostfixInstance(gw.smtp_port, sink.port)
    gw.config.write_text(gw.config.read_text().replace('upstream = "127.0.0.1:0"',
                                                       f'upstream = "127.0.0.1:{pf.reinject}"'))
    try:
        pf.start()
        gw.start()
        yield pf, gw
    finally:
        try:
            gw.stop()
        finally:
            pf.stop()




def wait_for_rcpt(sink: Sink, rcpt: str, timeout: float) -> float | None:
    """Monotonic time the sink first holds a message for `rcpt`, or None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sink.handler.to(rcpt):
            return time.monotonic()
        time.sleep(0.05)
    return None


def test_clean_is_delivered_after_the_delay_and_my_numbers_wait_for_release(chain, sink: Sink) -> None:  # noqa: ANN001
    pf, gw = chain
    assert pf.postconf("content_filter") == f"dlpgate:[127.0.0.1]:{gw.smtp_port}"

    # 1. clean mail: through Postfix, dlpgate (after the send delay), Postfix again, to the sink
    t0 = time.monotonic()
    send(pf.inbound, "a@example.jp", ["b@example.com"], mail("a@example.jp", "b@example.com", "hello", "no PII"))
    arrived = wait_for_rcpt(sink, "b@example.com", DELAY + 20)
    assert arrived is not None, gw.log_text()[-3000:] + pf.maillog()
    assert arrived - t0 >= DELAY, "delivered before the send delay was over"
    data = sink.handler.to("b@example.com")[0].data
    assert b"by gw.test (dlpgate)" in data
    assert data.count(b"(Postfix) with ESMTP") >= 2, "did not pass Postfix on both sides of dlpgate"

    # 2. My Numbers: Postfix hands it over (250), dlpgate holds it
    held, numbers = my_number_mail("a@example.jp", "x@example.com", seed=11)
    send(pf.inbound, "a@example.jp", ["x@example.com"], held)
    row = None
    deadline = time.monotonic() + 20
    while row is None and time.monotonic() < deadline:
        r = gw.cli("quarantine", "list", "--json")
        assert r.returncode == 0, r.stderr
        rows = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
        row = next((x for x in rows if "x@example.com" in x.get("recipients", [])), None)
        if row is None:
            time.sleep(0.2)
    assert row is not None, "never held: " + gw.log_text()[-3000:] + pf.maillog()
    assert row["state"] == "held"
    assert not any(n in r.stdout for n in numbers), "the CLI printed a full identifier"
    assert wait_for_rcpt(sink, "x@example.com", DELAY + 1) is None, "held mail leaked to the recipient"

    # 3. released with the CLI: the running gateway delivers it through Postfix
    r = gw.cli("quarantine", "release", row["id"], "--approver", "boss@example.jp", "--reason", "checked")
    assert r.returncode == 0, r.stdout + r.stderr
    assert wait_for_rcpt(sink, "x@example.com", 20) is not None, gw.log_text()[-3000:] + pf.maillog()
    got = sink.handler.to("x@example.com")[0].data
    assert b"by gw.test (dlpgate)" in got and b"Subject:" in got

    # the gateway's log says what happened and never carries an identifier
    log = gw.log_text()
    assert not any(n in log for n in numbers)
    assert "status=sent" in pf.maillog()


def test_relayhost_setup_sends_everything_through_dlpgate(tmp_path: Path, sink: Sink) -> None:
    """deploy/postfix/relayhost: Postfix relays to dlpgate, whose upstream is the Internet (the sink)."""
    why = _can_run()
    assert why is None, f"CI=true: the Postfix test may not skip: {why}"
    gw = ServeProcess(tmp_path, upstream_port=sink.port, delay=DELAY)
    pf = PostfixInstance(gw.smtp_port, sink.port, setup="relayhost")
    try:
        pf.start()
        gw.start()
        assert pf.postconf("relayhost") == f"[127.0.0.1]:{gw.smtp_port}"
        t0 = time.monotonic()
        send(pf.inbound, "a@example.jp", ["b@example.com"], mail("a@example.jp", "b@example.com", "hi", "no PII"))
        held, numbers = my_number_mail("a@example.jp", "x@example.com", seed=12)
        send(pf.inbound, "a@example.jp", ["x@example.com"], held)
        arrived = wait_for_rcpt(sink, "b@example.com", DELAY + 20)
        assert arrived is not None, gw.log_text()[-3000:] + pf.maillog()
        assert arrived - t0 >= DELAY
        data = sink.handler.to("b@example.com")[0].data
        assert b"by gw.test (dlpgate)" in data and data.count(b"(Postfix) with ESMTP") == 1
        held_events = [e for e in gw.wait_for_event("accepted", 2) if e.get("state") == "held"]
        assert len(held_events) == 1, gw.log_text()[-3000:] + pf.maillog()
        assert not sink.handler.to("x@example.com")
        # Postfix saw dlpgate's 250 for both and handed them over: nothing left in its queue
        deadline = time.monotonic() + 10
        while pf.maillog().count("status=sent") < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pf.maillog().count("status=sent") == 2, pf.maillog()
        assert not any(n in gw.log_text() for n in numbers)
    finally:
        try:
            gw.stop()
        finally:
            pf.stop()
