# Sourced by scripts/up and scripts/test: create .venv when missing (installing
# python3-venv first on Debian when it is missing and we are root), then activate it.

step() { printf '\n==> %s\n' "$*" >&2; }

if [[ ! -x .venv/bin/python ]]; then
  if ! python3 -c 'import ensurepip' 2>/dev/null; then
    if [[ $(id -u) -ne 0 ]]; then
      echo "python3 cannot create a venv; install it with: sudo apt-get install -y python3-venv" >&2
      exit 1
    fi
    step "installing python3-venv"
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y python3-venv
  fi
  step "creating .venv"
  python3 -m venv .venv
fi
export VIRTUAL_ENV="$PWD/.venv"
export PATH="$VIRTUAL_ENV/bin:$PATH"
