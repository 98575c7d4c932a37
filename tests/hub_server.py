"""The Hugging Face Hub endpoints that `huggingface_hub` and `datasets` use to push a dataset and
its card, on 127.0.0.1, committed files kept in memory.

Implemented as the client library calls them: create a repo (`/api/repos/create`), repo info
(`/api/datasets/{id}[/revision/{rev}]`), validate a card's YAML, preupload (parquet files answered
"lfs", as the Hub's .gitattributes makes them, the rest "regular", whose bytes travel base64 inside
the commit), the Git LFS batch API with the basic transfer (a PUT to the `href` it answers; the
client's Xet path, which needs Xet storage, is turned off with its own switch, HF_HUB_DISABLE_XET),
the NDJSON commit (with `parentCommit` checked, 412 when stale), listing
(`/tree/{rev}[/{path}]`) and `/datasets/{id}/resolve/{rev}/{path}` (HEAD, GET)
with the headers `hf_hub_download` reads. A request without the server's token is answered 401 as
the Hub does; `fail` answers every request with that status (404 as for a missing repo), to test
what a failing hub does.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from urllib.parse import unquote, urlsplit

from batch_server import JSONHandler, Served

REPO = r"(?P<repo>[^/]+/[^/]+)"


def _sha(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


class HubServer(Served):
    """Dataset repos on 127.0.0.1: `repos[repo_id]` is its commits (sha -> {path: bytes}) and head."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.repos: dict[str, dict] = {}
        self.lfs: dict[str, bytes] = {}  # sha256 -> bytes uploaded through the LFS batch API
        self.fail: int | None = None
        self._lock = threading.Lock()  # one commit at a time, as on a branch of the Hub
        self._cancel = {}
        self._serve(self._handler())

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def files(self, repo_id: str) -> dict[str, bytes]:
        """The repo's files at its head commit."""
        repo = self.repos[repo_id]
        return repo["commits"][repo["head"]]

    def create(self, repo_id: str, files: dict[str, bytes] | None = None) -> None:
        """A repo whose first commit holds `files` (the Hub's own first commit holds .gitattributes)."""
        snapshot = {".gitattributes": b"*.parquet filter=lfs diff=lfs merge=lfs -text\n", **(files or {})}
        head = _sha(repr(sorted(snapshot.items())).encode())
        self.repos[repo_id] = {"head": head, "commits": {head: snapshot}}

    # ------------------------------------------------------------------------------- the API
    def info(self, repo_id: str, sha: str) -> dict:
        files = self.repos[repo_id]["commits"][sha]
        return {
            "id": repo_id,
            "sha": sha,
            "private": True,
            "siblings": [{"rfilename": path} for path in sorted(files)],
        }

    @staticmethod
    def upload_mode(path: str) -> dict:
        """Preupload's answer for one file: parquet through LFS, as the Hub's .gitattributes says."""
        return {"path": path, "uploadMode": "lfs" if path.endswith(".parquet") else "regular", "shouldIgnore": False}

    def commit(self, repo_id: str, lines: list[dict]) -> tuple[int, dict]:
        """Apply an NDJSON commit (its header line, then one operation a line) on the repo's head."""
        with self._lock:
            return self._apply(self.repos[repo_id], repo_id, lines)

    def _apply(self, repo: dict, repo_id: str, lines: list[dict]) -> tuple[int, dict]:
        header = lines[0]["value"]
        if header.get("parentCommit") not in (None, repo["head"]):
            return 412, {"error": "A commit has happened since. Please refresh and try again."}
        files = dict(repo["commits"][repo["head"]])
        for line in lines[1:]:
            value = line["value"]
            if line["key"] == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif line["key"] == "deletedFile":
                files.pop(value["path"], None)
            elif line["key"] == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                files = {p: d for p, d in files.items() if not p.startswith(prefix)}
            elif line["key"] == "lfsFile":
                if value["oid"] not in self.lfs:
                    return 422, {"error": f"LFS object {value['oid']} was not uploaded"}
                files[value["path"]] = self.lfs[value["oid"]]
            else:
                return 400, {"error": f"unsupported commit operation {line['key']}"}
        sha = _sha((repo["head"] + json.dumps(header)).encode() + repr(sorted(files.items())).encode())
        repo["commits"][sha] = files
        repo["head"] = sha
        return 200, {"commitUrl": f"{self.endpoint}/datasets/{repo_id}/commit/{sha}", "commitOid": sha}

    @staticmethod
    def tree(files: dict[str, bytes], folder: str) -> list[dict]:
        """The files and folders right in `folder` ("" is the root), as the Hub lists a tree page."""
        prefix = folder.rstrip("/") + "/" if folder else ""
        out: dict[str, dict] = {}
        for path, data in files.items():
            if path.startswith(prefix):
                name = path[len(prefix) :].split("/")[0]
                if prefix + name == path:
                    out[path] = {"type": "file", "path": path, "size": len(data), "oid": _sha(data)}
                else:
                    out[prefix + name] = {"type": "directory", "path": prefix + name, "oid": _sha(name.encode())}
        return list(out.values())

    def _handler(self) -> type[JSONHandler]:
        hub = self

        class Handler(JSONHandler):
            def _route(self, method: str) -> None:
                url = urlsplit(self.path)
                path = unquote(url.path)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if hub.fail == 404:  # as the Hub answers for a repo that is not there (or not yours)
                    return self._send(404, {"error": "Repository not found"}, headers={"X-Error-Code": "RepoNotFound"})
                if hub.fail is not None:
                    return self._send(hub.fail, {"error": "the hub is failing"})
                if method == "POST" and path == "/api/validate-yaml":  # open to all on the Hub
                    return self._send(200, {"errors": [], "warnings": []})
                if method == "PUT" and (oid := re.fullmatch(r"/lfs-upload/([0-9a-f]{64})", path)):  # pre-signed
                    if hashlib.sha256(body).hexdigest() != oid[1]:
                        return self._send(400, {"error": "content does not match its oid"})
                    hub.lfs[oid[1]] = body
                    return self._send(200, b"", "text/plain")
                if self.headers.get("Authorization") != f"Bearer {hub.token}":
                    return self._send(
                        401,
                        {"error": "Invalid credentials in Authorization header"},
                        headers={"X-Error-Message": "Invalid credentials in Authorization header"},
                    )
                if method == "POST" and path == "/api/repos/create":
                    params = json.loads(body)
                    repo_id = f"{params['organization']}/{params['name']}"
                    if repo_id in hub.repos:
                        return self._send(409, {"error": "You already created this dataset repo"})
                    hub.create(repo_id)
                    return self._send(200, {"url": f"{hub.endpoint}/datasets/{repo_id}", "name": repo_id})
                lfs = re.fullmatch(rf"/datasets/{REPO}\.git/info/lfs/objects/batch", path)
                if method == "POST" and lfs and lfs["repo"] in hub.repos:
                    objects = [
                        {**obj, "actions": {"upload": {"href": f"{hub.endpoint}/lfs-upload/{obj['oid']}"}}}
                        for obj in json.loads(body)["objects"]
                    ]
                    return self._send(200, {"transfer": "basic", "objects": objects})
                match = re.fullmatch(rf"/(?:api/)?datasets/{REPO}(?P<rest>/.*)?", path)
                if not match or match["repo"] not in hub.repos:
                    return self._send(404, {"error": "Repository not found"}, headers={"X-Error-Code": "RepoNotFound"})
                repo_id, rest = match["repo"], match["rest"] or ""
                repo = hub.repos[repo_id]
                api = path.startswith("/api/")

                def at(rev: str) -> str | None:  # a branch name (one branch: main) or a commit sha
                    return repo["head"] if rev == "main" else rev if rev in repo["commits"] else None

                route = re.fullmatch(r"(?:/revision/(?P<rev>[^/]+))?", rest) if api else None
                if route and method == "GET":
                    sha = at(route["rev"] or "main")
                    if sha is None:
                        return self._send(404, {"error": "Invalid rev"}, headers={"X-Error-Code": "RevisionNotFound"})
                    return self._send(200, hub.info(repo_id, sha))
                route = re.fullmatch(r"/(?P<op>preupload|commit|tree)/(?P<rev>[^/]+)(?:/(?P<sub>.*))?", rest)
                if api and route and (sha := at(route["rev"])) is not None:
                    files = repo["commits"][sha]
                    if route["op"] == "preupload":
                        return self._send(
                            200, {"files": [hub.upload_mode(f["path"]) for f in json.loads(body)["files"]]}
                        )
                    if route["op"] == "commit":
                        lines = [json.loads(line) for line in body.splitlines() if line]
                        return self._send(*hub.commit(repo_id, lines))
                    entries = hub.tree(files, route["sub"] or "")  # tree: not recursive, as HfFileSystem asks
                    if route["sub"] and not entries:
                        return self._send(404, {"error": "not found"}, headers={"X-Error-Code": "EntryNotFound"})
                    return self._send(200, json.dumps(entries).encode())
                route = re.fullmatch(r"/resolve/(?P<rev>[^/]+)/(?P<file>.+)", rest)
                if not api and route and method in ("GET", "HEAD") and (sha := at(route["rev"])) is not None:
                    data = repo["commits"][sha].get(route["file"])
                    if data is None:
                        return self._send(404, {"error": "Entry not found"}, headers={"X-Error-Code": "EntryNotFound"})
                    headers = {"X-Repo-Commit": sha, "ETag": f'"{_sha(data)}"'}
                    return self._send(200, data, "application/octet-stream", headers=headers, head=method == "HEAD")
                return self._send(404, {"error": f"no route {method} {path}"})

            def do_GET(self) -> None:
                self._route("GET")

            def do_HEAD(self) -> None:
                self._route("HEAD")

            def do_POST(self) -> None:
                self._route("POST")

            def do_PUT(self) -> None:
                self._route("PUT")

        return Handler
