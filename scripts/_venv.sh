# Sourced by the scripts: make .venv and install the project's packages only when pyproject.toml (or the
# requested extras, or the project's folder) changed since the last install; a stamp in .venv records it.
ensure_venv() {
  local extras="$1" spec="." stamp want
  [ -n "$extras" ] && spec=".[$extras]"
  [ -x .venv/bin/python ] || python3 -m venv .venv
  stamp=".venv/.tidewater-install${extras:+-$extras}"
  want="$(cksum < pyproject.toml) $PWD"
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "installing packages (pyproject.toml changed since the last install)…" >&2
    .venv/bin/pip install -q --upgrade pip
    .venv/bin/pip install -q -e "$spec"
    printf '%s' "$want" > "$stamp"
  fi
}
