# Shared set-up steps for scripts/demo, scripts/test and .ci/run. Source it; do not run it.
# Everything here is idempotent: a second run finds the work done and moves on quickly.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"

say() { printf '==> %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"
    elif command -v sudo >/dev/null 2>&1; then sudo "$@"
    else return 1
    fi
}

# The C toolchain and headers mysqlclient is built with (it ships no Linux wheels).
ensure_system_packages() {
    local missing=()
    command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
    command -v gcc >/dev/null 2>&1 || missing+=(gcc)
    if ! pkg-config --exists libmariadb 2>/dev/null && ! pkg-config --exists mysqlclient 2>/dev/null; then
        missing+=(libmariadb-dev)
    fi
    if ! python3 -c 'import sysconfig, os, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'; then
        missing+=(python3-dev)
    fi
    python3 -m venv --help >/dev/null 2>&1 && python3 -c 'import ensurepip' 2>/dev/null || missing+=(python3-venv)
    [ ${#missing[@]} -eq 0 ] && return 0
    if command -v apt-get >/dev/null 2>&1; then
        say "installing system packages: ${missing[*]}"
        if as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 \
            || { as_root apt-get update -q >/dev/null 2>&1 \
                 && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null; }; then
            return 0
        fi
    fi
    say "could not install ${missing[*]}; the MySQL driver may fail to build (MySQL tests are then skipped)"
}

pip_quiet() {
    # This machine's pip config may point at missing local indexes; hide only those warnings.
    "$VENV/bin/python" -m pip -q "$@" 2> >(grep -v '^WARNING: Location' >&2)
}

# .venv with the package (editable) and the given extras; reinstalls only when pyproject.toml changes.
# The mysql extra is compiled from source; if that fails the rest still installs, and the
# MySQL tests are skipped (or fail, where WORKSYNC_REQUIRE_BACKENDS names mysql).
ensure_venv() {
    local extras="$1" stamp others
    python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
        || { say "Python 3.10 or newer is needed (python3 is $(python3 --version 2>&1))"; exit 1; }
    [ -x "$VENV/bin/python" ] || { say "creating $VENV"; python3 -m venv "$VENV"; }
    stamp="$VENV/.installed-$(sha1sum < "$ROOT/pyproject.toml" | cut -c1-12)-${extras:-core}"
    [ -f "$stamp" ] && return 0
    say "installing worksync_sa${extras:+[$extras]} into $VENV"
    pip_quiet install --upgrade pip
    others="$(tr "," "\n" <<< "$extras" | grep -vx mysql | paste -sd, - || true)"
    pip_quiet install -e "$ROOT${others:+[$others]}"
    rm -f "$VENV"/.installed-*
    case ",$extras," in
        *,mysql,*) pip_quiet install -e "$ROOT[mysql]" || {
            # No stamp: the next run tries again (once the C headers are there).
            say "mysqlclient did not build; MySQL tests will be skipped unless required"
            return 0
        } ;;
    esac
    touch "$stamp"
}

# The production topologies the topology tests start on loopback (tests/topology.py):
# PgBouncer, HAProxy, a Galera cluster (galera-4, and rsync for its state transfers).
# The PostgreSQL server binaries (initdb, pg_basebackup, pg_ctl) come with the server.
ensure_topology_packages() {
    local missing=()
    command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ] || missing+=(pgbouncer)
    command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
    [ -e /usr/lib/galera/libgalera_smm.so ] || missing+=(galera-4)
    command -v rsync >/dev/null 2>&1 || missing+=(rsync)
    [ ${#missing[@]} -eq 0 ] && return 0
    command -v apt-get >/dev/null 2>&1 || { say "cannot install ${missing[*]}: no apt-get"; return 0; }
    say "installing topology packages: ${missing[*]}"
    # pgbouncer's package would start a system pgbouncer on 6432; the tests start their own.
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 \
        || { as_root apt-get update -q >/dev/null 2>&1 \
             && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null; } \
        || say "could not install ${missing[*]}; the topology tests will be skipped unless required"
}

# Headless Chromium and its WebDriver, for the status page's browser tests
# (tests/test_web_browser.py drives Debian's /usr/bin/chromium through /usr/bin/chromedriver).
ensure_browser_packages() {
    local missing=()
    [ -x /usr/bin/chromium ] || missing+=(chromium)
    [ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
    [ ${#missing[@]} -eq 0 ] && return 0
    command -v apt-get >/dev/null 2>&1 || { say "cannot install ${missing[*]}: no apt-get"; return 0; }
    say "installing browser packages: ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 \
        || { as_root apt-get update -q >/dev/null 2>&1 \
             && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null; } \
        || say "could not install ${missing[*]}; the browser tests will be skipped (under CI they fail)"
}

# Go 1.22 from Debian's bookworm-backports, to build the real Go original (../shared/go-original)
# that tests/test_go_original.py races against worksync_sa. Bookworm's own Go (1.19) cannot
# build it. The suite is added beside the machine's Debian sources, with the same URIs.
GO_BIN=/usr/lib/go-1.22/bin/go
ensure_go() {
    [ -x "$GO_BIN" ] && return 0
    command -v apt-get >/dev/null 2>&1 || { say "cannot install Go 1.22: no apt-get"; return 0; }
    say "installing Go 1.22 (golang-1.22-go from bookworm-backports)"
    local list=/etc/apt/sources.list.d/worksync-backports.sources
    if ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
        printf '%s\n' "Types: deb" "URIs: http://deb.debian.org/debian" \
            "Suites: bookworm-backports" "Components: main" \
            "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg" | as_root tee "$list" >/dev/null
    fi
    { as_root apt-get update -q >/dev/null 2>&1 \
        && as_root env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -q -t bookworm-backports golang-1.22-go >/dev/null 2>&1; } \
        || say "could not install Go 1.22; the tests beside the Go original will be skipped (under CI they fail)"
}

port_open() { python3 -c "import socket,sys; s=socket.socket(); s.settimeout(1); sys.exit(s.connect_ex(('127.0.0.1', $1)))"; }

wait_for_port() {
    local port="$1" i
    for i in $(seq 1 60); do port_open "$port" && return 0; sleep 0.5; done
    return 1
}

# Start the local MariaDB and PostgreSQL servers if they are installed but down.
ensure_servers() {
    if ! port_open 3306 && [ -x /usr/sbin/mariadbd ]; then
        say "starting MariaDB"
        as_root start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd || true
        wait_for_port 3306 || say "MariaDB did not come up on 127.0.0.1:3306"
    fi
    if ! port_open 5432 && [ -d /etc/postgresql ]; then
        say "starting PostgreSQL"
        as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start || true
        wait_for_port 5432 || say "PostgreSQL did not come up on 127.0.0.1:5432"
    fi
}

# The docs extra (MkDocs, mkdocstrings) in the same .venv, beside what ensure_venv put there.
# It keeps a stamp of its own, so it neither triggers nor undoes ensure_venv's installs;
# it reinstalls only when pyproject.toml changes.
ensure_docs() {
    local stamp
    [ -x "$VENV/bin/python" ] || ensure_venv ""
    stamp="$VENV/.docs-$(sha1sum < "$ROOT/pyproject.toml" | cut -c1-12)"
    [ -f "$stamp" ] && return 0
    say "installing worksync_sa[docs] into $VENV"
    pip_quiet install -e "$ROOT[docs]"
    rm -f "$VENV"/.docs-*
    touch "$stamp"
}

# An interpreter of Python MAJOR.MINOR that runs (pyenv's, else one on PATH; a pyenv shim
# for a version not selected does not run). Prints its path.
python_for() {
    local version="$1" found
    for found in "$HOME"/.pyenv/versions/"$version".*/bin/"python$version" "python$version"; do
        if "$found" -c 'import sys, venv' >/dev/null 2>&1; then
            "$found" -c 'import sys; print(sys.executable)'
            return 0
        fi
    done
    say "Python $version not found (under ~/.pyenv/versions or on PATH)"
    return 1
}

# uv (from PyPI, in a venv of its own under .matrix/): resolves and installs in seconds,
# and can pick the lowest versions a project admits. Prints its path.
ensure_uv() {
    local tools="$ROOT/.matrix/tools"
    if [ ! -x "$tools/bin/uv" ]; then
        say "installing uv into $tools"
        python3 -m venv "$tools"
        "$tools/bin/python" -m pip -q install uv 2> >(grep -v '^WARNING: Location' >&2)
    fi
    echo "$tools/bin/uv"
}
