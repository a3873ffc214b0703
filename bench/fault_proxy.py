"""The fault proxy (`target/debug/quell-fault-proxy`, tests/fault_proxy.rs) in front of a sandbox,
for the responder alone: the sandbox host routes the function's calls to it while the sandbox
directory's `responder-endpoint` names it."""

import json
import subprocess
import urllib.request


class FaultProxy:
    def __init__(self, root, home, endpoint):
        self.process = subprocess.Popen([str(root / "target/debug/quell-fault-proxy"), "--upstream", endpoint], stdout=subprocess.PIPE, text=True)
        self.url = self.process.stdout.readline().strip().removeprefix("listening on ")
        self.routing = home / "sandbox/responder-endpoint"
        self.routing.write_text(self.url)

    def _call(self, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.url}/__proxy/{path}", data=data, method="PUT" if data else "GET")
        return json.loads(urllib.request.urlopen(request).read())

    def set(self, faults):
        """What the proxy does to the responder's calls (`Faults` in tests/fault_proxy.rs)."""
        return self._call("faults", faults)

    def stats(self):
        return self._call("stats")

    def close(self):
        """The responder's calls go straight to the sandbox again."""
        self.routing.unlink(missing_ok=True)
        self.process.kill()
