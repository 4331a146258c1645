"""A local, recording stand-in for the Hugging Face Hub HTTP API, for upload tests.

It answers the routes that `HfApi.upload_folder` / `create_commit` / `create_pull_request` /
`create_repo` / `create_branch` / `repo_info` / `list_repo_tree` / `get_paths_info` and
`hf_hub_download` use, keeps repositories (branches, pull-request refs, commits, file trees) in
memory, and records every request, so a test can run the real client (usually in a subprocess
with `HF_ENDPOINT` set: the client reads it once, at import) and then assert on what arrived.

Written against huggingface_hub 2.4.0 (the 2.x major: routes read from its hf_api.py,
_commit_api.py, _upload_pipeline.py and lfs.py). With `hf_xet` installed, 2.x's `upload_folder`
runs a pipelined upload: preupload -> (Xet storage for "lfs" files) -> [create_pull_request] ->
commit to the branch or to `refs/pr/N`. This server does not emulate Xet's storage service, so by
default it answers preupload with `regular` for every file (content travels base64 inside the
NDJSON commit). `upload_mode="lfs"` marks files of at least `lfs_threshold` bytes as LFS and
serves the legacy LFS batch / PUT / verify routes; the client then needs HF_HUB_DISABLE_XET=1
(that path also calls validate-yaml and commits with `?create_pr=1`). A Xet token request is
answered 501 with a message saying so.

    with HubEndpoint() as hub:                       # or HubEndpoint(token="hf_test")
        env = {**os.environ, **hub.client_env(tmp_path)}
        subprocess.run([...], env=env)
        hub.files("org/name", revision="refs/pr/1")  # {path: bytes}
        hub.requests                                  # every Recorded request
"""
from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

HF_HUB_MAJOR_TESTED = 2  # huggingface_hub 2.4.0

_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
GITATTRIBUTES = b"*.parquet filter=lfs diff=lfs merge=lfs -text\n*.fits filter=lfs diff=lfs merge=lfs -text\n"


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Recorded:
    """One request as the server saw it (path and query decoded; body kept raw)."""

    method: str
    path: str
    query: dict
    headers: dict  # lower-case names
    body: bytes
    route: str = ""
    status: int = 0

    def json(self):
        return json.loads(self.body) if self.body else None

    def ndjson(self) -> list:
        return [json.loads(line) for line in self.body.splitlines() if line.strip()]


@dataclass
class Commit:
    oid: str
    revision: str  # the ref it was made on, e.g. "main" or "refs/pr/1"
    parent: str | None
    summary: str
    description: str
    added: list[str]
    deleted: list[str]
    tree: dict  # path -> (content bytes, lfs sha256 or None)


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    refs: dict = field(default_factory=dict)  # ref name -> commit oid
    commits: dict = field(default_factory=dict)  # oid -> Commit
    discussions: dict = field(default_factory=dict)  # num -> dict

    def head(self, ref: str) -> Commit | None:
        if ref in self.refs:
            return self.commits[self.refs[ref]]
        return self.commits.get(ref)  # a commit oid


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, **extra):
        super().__init__(message)
        self.status, self.message, self.code, self.extra = status, message, code, extra


class HubEndpoint:
    """The server; a context manager. `url` is what HF_ENDPOINT should be."""

    def __init__(self, *, token: str | None = None, user: str = "mmu-test", upload_mode: str = "regular",
                 lfs_threshold: int = 10 * 2**20):
        if upload_mode not in ("regular", "lfs"):
            raise ValueError("upload_mode is 'regular' or 'lfs'")
        self.token, self.user, self.upload_mode, self.lfs_threshold = token, user, upload_mode, lfs_threshold
        self.requests: list[Recorded] = []
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lfs_objects: dict[str, bytes] = {}
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> HubEndpoint:
        handler = type("Handler", (_Handler,), {"hub": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="hf-endpoint", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> HubEndpoint:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def client_env(self, home) -> dict[str, str]:
        """Environment for a client process: this endpoint, a private HF_HOME, a token."""
        return {"HF_ENDPOINT": self.url, "HF_HOME": str(home), "HF_TOKEN": self.token or "hf_mmu_test_token",
                "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
                **({"HF_HUB_DISABLE_XET": "1"} if self.upload_mode == "lfs" else {})}

    # -- what tests read ------------------------------------------------------------------------

    def repo(self, repo_id: str, repo_type: str = "dataset") -> Repo:
        return self.repos[(repo_type, repo_id)]

    def files(self, repo_id: str, revision: str = "main", repo_type: str = "dataset") -> dict[str, bytes]:
        """The committed files at a branch, PR ref or commit."""
        with self._lock:
            head = self.repo(repo_id, repo_type).head(revision)
            if head is None:
                raise KeyError(f"no revision {revision!r} in {repo_id}")
            return {p: c for p, (c, _) in head.tree.items()}

    def commits(self, repo_id: str, repo_type: str = "dataset") -> list[Commit]:
        """Every commit but the repository's initial one, oldest first."""
        return [c for c in self.repo(repo_id, repo_type).commits.values() if c.parent is not None]

    def routes(self) -> list[str]:
        return [r.route for r in self.requests]

    def unhandled(self) -> list[Recorded]:
        return [r for r in self.requests if r.route == "unhandled"]

    # -- state changes (also usable by tests to seed a repository) ---------------------------------

    def create_repo(self, repo_id: str, repo_type: str = "dataset", private: bool = False,
                    files: dict[str, bytes] | None = None) -> Repo:
        with self._lock:
            if (repo_type, repo_id) in self.repos:
                raise HubError(409, f"You already created this {repo_type} repo: {repo_id}")
            repo = Repo(repo_type, repo_id, private)
            self.repos[(repo_type, repo_id)] = repo
            root = self._new_commit(repo, "main", None, "initial commit", "",
                                    {".gitattributes": (GITATTRIBUTES, None)}, [".gitattributes"], [])
            repo.refs["main"] = root.oid
            if files:
                self.commit(repo, "main", "seed", "", {p: (c, None) for p, c in files.items()}, [])
            return repo

    def _new_commit(self, repo, ref, parent, summary, description, tree, added, deleted) -> Commit:
        oid = hashlib.sha1(f"{repo.repo_id}:{ref}:{len(repo.commits)}:{time.time_ns()}".encode()).hexdigest()
        c = Commit(oid, ref, parent, summary, description, added, deleted, tree)
        repo.commits[oid] = c
        return c

    def commit(self, repo: Repo, ref: str, summary: str, description: str, added: dict, deleted: list,
               parent_commit: str | None = None) -> Commit:
        with self._lock:
            head = repo.head(ref)
            if head is None or ref not in repo.refs:
                raise HubError(404, f"Invalid rev id: {ref}", "RevisionNotFound")
            if parent_commit and not head.oid.startswith(parent_commit):
                raise HubError(412, f"parent commit {parent_commit} is not the head of {ref} ({head.oid})")
            tree = dict(head.tree)
            for path in deleted:
                if path.endswith("/"):
                    gone = [p for p in tree if p.startswith(path)]
                elif path in tree:
                    gone = [path]
                else:
                    raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                for p in gone:
                    del tree[p]
            tree.update(added)
            c = self._new_commit(repo, ref, head.oid, summary, description, tree, sorted(added), deleted)
            repo.refs[ref] = c.oid
            return c

    def open_pull_request(self, repo: Repo, title: str, description: str) -> dict:
        with self._lock:
            num = len(repo.discussions) + 1
            ref = f"refs/pr/{num}"
            repo.refs[ref] = repo.refs["main"]
            pr = {"num": num, "title": title, "description": description, "isPullRequest": True,
                  "status": "draft", "ref": ref, "base": "refs/heads/main",
                  "createdAt": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())}
            repo.discussions[num] = pr
            return pr


# ------------------------------------------------------------------------------------------------
# routes

_R = r"(?P<type>models|datasets|spaces)/(?P<repo>[^/]+/[^/]+)"
_ROUTES = [
    ("GET", r"/api/whoami-v2", "whoami"),
    ("POST", r"/api/repos/create", "create_repo"),
    ("POST", r"/api/validate-yaml", "validate_yaml"),
    ("GET", rf"/api/{_R}/xet-(?P<kind>read|write)-token/(?P<rev>[^/]+)", "xet_token"),
    ("GET", rf"/api/{_R}/xet-(?P<kind>read|write)-token", "xet_token"),
    ("GET", rf"/api/{_R}/refs", "list_refs"),
    ("POST", rf"/api/{_R}/branch/(?P<rev>[^/]+)", "create_branch"),
    ("POST", rf"/api/{_R}/preupload/(?P<rev>[^/]+)", "preupload"),
    ("POST", rf"/api/{_R}/commit/(?P<rev>[^/]+)", "commit"),
    ("GET", rf"/api/{_R}/tree/(?P<rev>[^/]+)(?P<path>/.*)?", "tree"),
    ("POST", rf"/api/{_R}/paths-info/(?P<rev>[^/]+)", "paths_info"),
    ("POST", rf"/api/{_R}/discussions", "create_discussion"),
    ("GET", rf"/api/{_R}/discussions/(?P<num>\d+)", "discussion"),
    ("GET", rf"/api/{_R}/revision/(?P<rev>[^/]+)", "repo_info"),
    ("GET", rf"/api/{_R}", "repo_info"),
    ("POST", r"/(?P<prefix>datasets/|spaces/)?(?P<repo>[^/]+/[^/]+)\.git/info/lfs/objects/batch", "lfs_batch"),
    ("PUT", r"/_lfs/(?P<oid>[0-9a-f]{64})", "lfs_upload"),
    ("POST", r"/_lfs/(?P<oid>[0-9a-f]{64})/verify", "lfs_verify"),
    ("GET", r"/(?P<type>datasets/|spaces/)?(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)", "resolve"),
    ("HEAD", r"/(?P<type>datasets/|spaces/)?(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)", "resolve"),
]
_COMPILED = [(m, re.compile(p + r"$"), name) for m, p, name in _ROUTES]


class _Handler(BaseHTTPRequestHandler):
    hub: HubEndpoint
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _handle(self):
        hub = self.hub
        split = urlsplit(self.path)
        rec = Recorded(self.command, unquote(split.path), {k: v[-1] for k, v in parse_qs(split.query).items()},
                       {k.lower(): v for k, v in self.headers.items()}, self._body())
        with hub._lock:
            hub.requests.append(rec)
        for method, rx, name in _COMPILED:
            m = rx.match(split.path)
            if m and method == self.command:
                rec.route = name
                args = {k: unquote(v) if v else v for k, v in m.groupdict().items()}
                try:
                    self._check_auth(name)
                    status, payload, headers = getattr(self, "r_" + name)(rec, **args)
                except HubError as e:
                    status, payload = e.status, {"error": e.message, **e.extra}
                    headers = {"X-Error-Message": e.message, **({"X-Error-Code": e.code} if e.code else {})}
                break
        else:
            rec.route = "unhandled"
            msg = f"hf_endpoint: no route for {self.command} {split.path}"
            status, payload, headers = 404, {"error": msg}, {"X-Error-Message": msg}
        rec.status = status
        self._send(status, payload, headers)

    def _send(self, status, payload, headers):
        if isinstance(payload, (bytes, bytearray)):
            body, ctype = bytes(payload), "application/octet-stream"
        else:
            body, ctype = json.dumps(payload).encode(), "application/json"
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = _handle

    def _check_auth(self, route):
        auth = self.headers.get("Authorization", "")
        if self.hub.token is not None and route not in ("lfs_upload",) and auth != f"Bearer {self.hub.token}":
            raise HubError(401, "Invalid credentials in Authorization header")
        if route in ("whoami", "create_repo", "commit", "create_branch", "create_discussion") and not auth:
            raise HubError(401, "You must be authenticated to do this")

    def _repo(self, type, repo) -> Repo:
        rt = _TYPES.get(type) or {"": "model", None: "model", "datasets/": "dataset",
                                  "spaces/": "space"}[type]
        try:
            return self.hub.repo(repo, rt)
        except KeyError:
            raise HubError(404, f"Repository not found: {repo}", "RepoNotFound") from None

    def _head(self, repo: Repo, rev: str) -> Commit:
        head = repo.head(rev)
        if head is None:
            raise HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        return head

    def _url(self, repo: Repo) -> str:
        return f"{self.hub.url}/{_PREFIX[repo.repo_type]}{repo.repo_id}"

    # -- handlers: each returns (status, payload, headers) ----------------------------------------

    def r_whoami(self, rec):
        return 200, {"type": "user", "name": self.hub.user, "fullname": self.hub.user, "orgs": [],
                     "auth": {"type": "access_token", "accessToken": {"displayName": "test", "role": "write"}}}, {}

    def r_create_repo(self, rec):
        body = rec.json() or {}
        repo_id = f"{body.get('organization') or self.hub.user}/{body['name']}"
        private = body.get("visibility") == "private" or bool(body.get("private"))
        rtype = body.get("type") or "model"
        try:
            repo = self.hub.create_repo(repo_id, rtype, private)
        except HubError as e:  # the Hub's 409 still carries the url (the client reads it)
            e.extra["url"] = f"{self.hub.url}/{_PREFIX[rtype]}{repo_id}"
            raise
        return 200, {"url": self._url(repo), "name": repo_id, "id": repo_id}, {}

    def r_validate_yaml(self, rec):
        body = rec.json() or {}
        errors = []
        m = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", body.get("content", ""), re.S)
        if m:
            try:
                meta = yaml.safe_load(m.group(1))
            except yaml.YAMLError as e:
                meta, errors = None, [{"message": f"YAML parse error: {e}"}]
            if not errors and not isinstance(meta, dict):
                errors.append({"message": "metadata must be a YAML mapping"})
            elif not errors:
                for c in meta.get("configs") or []:
                    if not isinstance(c, dict) or "config_name" not in c:
                        errors.append({"message": f'"configs" entries need a "config_name": {c!r}'})
                lic = meta.get("license")
                if lic is not None and not isinstance(lic, (str, list)):
                    errors.append({"message": '"license" must be a string or a list of strings'})
        if errors:
            return 400, {"errors": errors, "warnings": []}, {}
        return 200, {"errors": [], "warnings": []}, {}

    def r_xet_token(self, rec, type, repo, kind, rev=None):
        raise HubError(501, "hf_endpoint does not emulate Xet storage: it answers preupload with 'regular' "
                            "(the default), or use HubEndpoint(upload_mode='lfs') with HF_HUB_DISABLE_XET=1")

    def r_repo_info(self, rec, type, repo, rev="main"):
        r = self._repo(type, repo)
        head = self._head(r, rev)
        return 200, {"id": r.repo_id, "sha": head.oid, "private": r.private, "author": r.repo_id.split("/")[0],
                     "lastModified": "2026-01-01T00:00:00.000Z", "tags": [], "downloads": 0, "likes": 0,
                     "siblings": [{"rfilename": p} for p in sorted(head.tree)]}, {}

    def r_list_refs(self, rec, type, repo):
        r = self._repo(type, repo)
        branches = [{"name": n, "ref": f"refs/heads/{n}", "targetCommit": o}
                    for n, o in r.refs.items() if not n.startswith("refs/")]
        prs = [{"name": n, "ref": n, "targetCommit": o} for n, o in r.refs.items() if n.startswith("refs/pr/")]
        return 200, {"branches": branches, "tags": [], "converts": [], "pullRequests": prs}, {}

    def r_create_branch(self, rec, type, repo, rev):
        r = self._repo(type, repo)
        if rev in r.refs:
            raise HubError(409, f"Reference already exists: refs/heads/{rev}")
        start = (rec.json() or {}).get("startingPoint") or "main"
        r.refs[rev] = self._head(r, start).oid
        return 200, {}, {}

    def _lfs(self, size: int) -> bool:
        return self.hub.upload_mode == "lfs" and size >= self.hub.lfs_threshold and size > 0

    def r_preupload(self, rec, type, repo, rev):
        r = self._repo(type, repo)
        head = r.head("main") if rec.query.get("create_pr") else self._head(r, rev)
        out = []
        for f in (rec.json() or {})["files"]:
            mode = "lfs" if self._lfs(int(f["size"])) else "regular"
            existing = head.tree.get(f["path"]) if head else None
            oid = None
            if existing is not None:
                content, lfs = existing
                oid = lfs if mode == "lfs" else git_blob_sha1(content)
            out.append({"path": f["path"], "uploadMode": mode, "shouldIgnore": False, "oid": oid})
        return 200, {"files": out, "commitOid": head.oid if head else None}, {}

    def r_commit(self, rec, type, repo, rev):
        r = self._repo(type, repo)
        lines = rec.ndjson()
        header = next((x["value"] for x in lines if x["key"] == "header"), {})
        added, deleted = {}, []
        for x in lines:
            v = x["value"]
            if x["key"] == "file":
                added[v["path"]] = (base64.b64decode(v["content"]), None)
            elif x["key"] == "lfsFile":
                if v["oid"] not in self.hub.lfs_objects:
                    raise HubError(400, f"LFS object {v['oid']} for {v['path']} was never uploaded")
                added[v["path"]] = (self.hub.lfs_objects[v["oid"]], v["oid"])
            elif x["key"] == "deletedFile":
                deleted.append(v["path"])
            elif x["key"] == "deletedFolder":
                deleted.append(v["path"].rstrip("/") + "/")
        pr = None
        if rec.query.get("create_pr") == "1":
            if rev != "main":
                raise HubError(400, "create_pr is only supported against main here")
            pr = self.hub.open_pull_request(r, header.get("summary", ""), header.get("description", ""))
            rev = pr["ref"]
        c = self.hub.commit(r, rev, header.get("summary", ""), header.get("description", ""), added, deleted,
                            header.get("parentCommit"))
        out = {"success": True, "commitOid": c.oid, "commitUrl": f"{self._url(r)}/commit/{c.oid}",
               "commitMessage": c.summary}
        out["pullRequestUrl"] = f"{self._url(r)}/discussions/{pr['num']}" if pr else None
        return 200, out, {}

    def _entry(self, path, content, lfs):
        e = {"type": "file", "path": path, "size": len(content), "oid": git_blob_sha1(content)}
        if lfs:
            e["lfs"] = {"oid": lfs, "size": len(content), "pointerSize": 130}
        return e

    def r_tree(self, rec, type, repo, rev, path=None):
        head = self._head(self._repo(type, repo), rev)
        prefix = (path or "").strip("/")
        prefix = prefix + "/" if prefix else ""
        recursive = rec.query.get("recursive", "false").lower() in ("true", "1")
        out, folders = [], set()
        for p, (content, lfs) in sorted(head.tree.items()):
            if not p.startswith(prefix):
                continue
            rest = p[len(prefix):]
            parts = rest.split("/")
            for i in range(1, len(parts)):
                folders.add(prefix + "/".join(parts[:i]))
            if recursive or len(parts) == 1:
                out.append(self._entry(p, content, lfs))
        for f in sorted(folders):
            if recursive or "/" not in f[len(prefix):]:
                out.append({"type": "directory", "path": f, "oid": hashlib.sha1(f.encode()).hexdigest()})
        if prefix and not out:
            raise HubError(404, f"{prefix} does not exist", "EntryNotFound")
        return 200, out, {}

    def r_paths_info(self, rec, type, repo, rev):
        head = self._head(self._repo(type, repo), rev)
        ctype = rec.headers.get("content-type", "")
        paths = (rec.json() or {}).get("paths", []) if "json" in ctype else \
            parse_qs(rec.body.decode()).get("paths", [])
        out = []
        for p in paths:
            if p in head.tree:
                out.append(self._entry(p, *head.tree[p]))
            elif any(q.startswith(p.rstrip("/") + "/") for q in head.tree):
                out.append({"type": "directory", "path": p, "oid": hashlib.sha1(p.encode()).hexdigest()})
        return 200, out, {}

    def r_create_discussion(self, rec, type, repo):
        r = self._repo(type, repo)
        body = rec.json() or {}
        if not body.get("pullRequest"):
            raise HubError(400, "hf_endpoint only opens pull requests, not plain discussions")
        pr = self.hub.open_pull_request(r, body.get("title", ""), body.get("description", ""))
        return 200, {"num": pr["num"], "pullRequest": True, "url": f"{self._url(r)}/discussions/{pr['num']}"}, {}

    def r_discussion(self, rec, type, repo, num):
        r = self._repo(type, repo)
        pr = r.discussions.get(int(num))
        if pr is None:
            raise HubError(404, f"no discussion {num}")
        return 200, {"num": pr["num"], "title": pr["title"], "status": pr["status"],
                     "isPullRequest": True, "createdAt": pr["createdAt"], "author": {"name": self.hub.user},
                     "repo": {"name": r.repo_id, "type": r.repo_type}, "events": [],
                     "changes": {"base": pr["base"]}, "filesWithConflicts": [], "diff": ""}, {}

    def r_lfs_batch(self, rec, repo, prefix=None):
        self._repo(prefix or "", repo)
        objects = []
        for o in (rec.json() or {}).get("objects", []):
            entry = {"oid": o["oid"], "size": o["size"], "authenticated": True}
            if o["oid"] not in self.hub.lfs_objects:
                entry["actions"] = {"upload": {"href": f"{self.hub.url}/_lfs/{o['oid']}"},
                                    "verify": {"href": f"{self.hub.url}/_lfs/{o['oid']}/verify"}}
            objects.append(entry)
        return 200, {"transfer": "basic", "objects": objects}, {}

    def r_lfs_upload(self, rec, oid):
        if hashlib.sha256(rec.body).hexdigest() != oid:
            raise HubError(400, f"uploaded content does not hash to {oid}")
        with self.hub._lock:
            self.hub.lfs_objects[oid] = rec.body
        return 200, {}, {}

    def r_lfs_verify(self, rec, oid):
        if oid not in self.hub.lfs_objects:
            raise HubError(404, f"LFS object {oid} not found")
        return 200, {}, {}

    def r_resolve(self, rec, repo, rev, path, type=None):
        r = self._repo(type or "", repo)
        head = self._head(r, rev)
        if path not in head.tree:
            raise HubError(404, f"{path} not found at {rev}", "EntryNotFound")
        content, lfs = head.tree[path]
        etag = lfs or git_blob_sha1(content)
        headers = {"X-Repo-Commit": head.oid, "ETag": f'"{etag}"'}
        if lfs:
            headers["X-Linked-Etag"] = f'"{lfs}"'
            headers["X-Linked-Size"] = str(len(content))
        return 200, content, headers
