#!/usr/bin/env bash
# Bootstraps a trn1 instance as Annapurna's `trainium` worker: the Neuron driver, runtime
# and tools of Neuron SDK 2.29.0 from AWS's apt repository (exact versions), a venv on a
# Python 3.11+ with the Neuron PyTorch stack (deployments/trn1/requirements-neuron.txt,
# exact pins) and this project's worker part, an AppArmor profile that lets bubblewrap
# create user namespaces, /etc/annapurna/worker.env, and the systemd unit that runs
# `prefect worker start --pool trainium`.
#
#   sudo ANNAPURNA_USER=ubuntu PREFECT_API_URL=http://prefect.internal:4200/api \
#        bash deployments/trn1/bootstrap.sh
#   bash deployments/trn1/bootstrap.sh --dry-run [--os-release FILE]
#
# Supported: Ubuntu 24.04 (noble; python3 is 3.12), which is also what the current Neuron
# DLAMI runs, and Ubuntu 22.04 (jammy; python3 is 3.10, so python3.11 is installed).
# Anything else is refused. Running it again changes nothing that is already in place:
# files are rewritten only when their content differs, packages are installed only when
# missing or at another version, the venv is created only when absent (or older than 3.11),
# and the worker is restarted only when something it uses changed.
#
# --dry-run changes nothing, downloads nothing, needs no root and prints the plan.
set -euo pipefail

# --- Neuron SDK 2.29.0 (04/09/2026), Trn1 packages -------------------------------------
# Confirmed in https://awsdocs-neuron.readthedocs-hosted.com/en/v2.29.0/release-notes/releasecontent.html
# The Debian package versions may carry a build suffix after these numbers, hence `=VERSION*`.
NEURON_SDK=2.29.0
NEURON_APT_PINS=(
  aws-neuronx-dkms=2.27.4.0
  aws-neuronx-runtime-lib=2.31.24.0
  aws-neuronx-collectives=2.31.24.0
  aws-neuronx-tools=2.29.18.0
)
NEURON_APT_URL=https://apt.repos.neuron.amazonaws.com
NEURON_KEY_URL=$NEURON_APT_URL/GPG-PUB-KEY-AMAZON-AWS-NEURON.PUB

APP_USER=${ANNAPURNA_USER:-ubuntu}
APP_DIR=${ANNAPURNA_DIR:-/opt/annapurna}
SRC_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
COMPILE_CACHE=${ANNAPURNA_NEURON_COMPILE_CACHE:-/var/cache/annapurna/neuron-compile-cache}
REQUIREMENTS=deployments/trn1/requirements-neuron.txt

KEYRING=/etc/apt/keyrings/neuron.asc
APT_SOURCE=/etc/apt/sources.list.d/neuron.list
ENV_FILE=/etc/annapurna/worker.env
UNIT_FILE=/etc/systemd/system/annapurna-worker.service
APPARMOR_PROFILE=/etc/apparmor.d/bwrap
USERNS_SYSCTL=/proc/sys/kernel/apparmor_restrict_unprivileged_userns
APPARMOR_LOADED=/sys/kernel/security/apparmor/profiles
WORKER_PATH=$APP_DIR/.venv/bin:/opt/aws/neuron/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
BWRAP_CHECK=(bwrap --unshare-all --ro-bind / / true)
DETECT_CHECK='from trainium_worker.sandbox import detect; level = detect("bwrap"); print("isolation:", level)'

DRY_RUN=0
OS_RELEASE=/etc/os-release
RESTART_REASONS=()

usage() {
  echo "usage: bash deployments/trn1/bootstrap.sh [--dry-run [--os-release FILE]]"
}

log() { echo "bootstrap: $*"; }
die() { echo "bootstrap: error: $*" >&2; exit 1; }

# Runs a command, or in a dry run prints it (words with other characters than these in quotes).
run() {
  if ((DRY_RUN)); then
    local arg
    printf '  +'
    for arg; do
      if [[ $arg =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then printf ' %s' "$arg"; else printf " '%s'" "$arg"; fi
    done
    echo
  else
    "$@"
  fi
}

as_user() { run sudo -u "$APP_USER" -H -- "$@"; }

# write_if_changed DEST MODE < CONTENT: writes DEST only when CONTENT differs from it.
# Succeeds when DEST was (or in a dry run would be) written, fails when it is unchanged.
write_if_changed() {
  local dest=$1 mode=$2 tmp
  tmp=$(mktemp)
  cat >"$tmp"
  if [[ -f $dest ]] && cmp -s "$tmp" "$dest"; then
    rm -f "$tmp"
    ((DRY_RUN)) && echo "  = $dest (unchanged)"
    return 1
  fi
  if ((DRY_RUN)); then
    echo "  would write $dest"
    rm -f "$tmp"
    return 0
  fi
  install -D -m "$mode" "$tmp" "$dest"
  rm -f "$tmp"
  log "wrote $dest"
}

# pin_version PIN: the version in `name=version*`, or nothing.
pin_version() {
  if [[ $1 == *=* ]]; then
    local version=${1#*=}
    echo "${version%\*}"
  fi
}

# pkg_installed NAME [VERSION]: NAME is installed (at VERSION, build suffix allowed).
pkg_installed() {
  local status
  status=$(dpkg-query -W -f='${Status} ${Version}' "$1" 2>/dev/null) || return 1
  [[ $status == "install ok installed "* ]] || return 1
  [[ -z ${2:-} || ${status#install ok installed } == "$2"* ]]
}

parse_args() {
  local os_release_given=0
  while (($#)); do
    case $1 in
      --dry-run) DRY_RUN=1 ;;
      --os-release)
        [[ $# -ge 2 ]] || die "--os-release needs a file"
        OS_RELEASE=$2; os_release_given=1; shift ;;
      -h | --help) usage; exit 0 ;;
      *) usage >&2; die "unknown argument: $1" ;;
    esac
    shift
  done
  if ((os_release_given && !DRY_RUN)); then
    die "--os-release is only for --dry-run (a real run reads /etc/os-release)"
  fi
}

# Sets OS_ID, OS_VERSION, OS_CODENAME, PYTHON, PYTHON_APT and PYTHON_NOTE, or refuses.
detect_os() {
  [[ -r $OS_RELEASE ]] || die "cannot read $OS_RELEASE"
  local fields
  # shellcheck disable=SC1090  # os-release is a shell fragment by definition
  fields=$(. "$OS_RELEASE" && echo "${ID:-}|${VERSION_ID:-}|${VERSION_CODENAME:-}")
  IFS='|' read -r OS_ID OS_VERSION OS_CODENAME <<<"$fields"
  case "$OS_ID:$OS_VERSION" in
    ubuntu:24.04)
      PYTHON=python3
      PYTHON_APT=(python3 python3-venv)
      PYTHON_NOTE="Ubuntu 24.04's python3 is 3.12" ;;
    ubuntu:22.04)
      PYTHON=python3.11
      PYTHON_APT=(python3.11 python3.11-venv)
      PYTHON_NOTE="22.04's python3 is 3.10 and the project needs 3.11+: python3.11 from the Ubuntu archive (universe), or the deadsnakes PPA where the archive has none" ;;
    *)
      die "unsupported OS: ID=${OS_ID:-?} VERSION_ID=${OS_VERSION:-?} (from $OS_RELEASE). This script supports Ubuntu 24.04 (noble, also the Neuron DLAMI) and Ubuntu 22.04 (jammy) only; nothing was changed." ;;
  esac
  [[ -n $OS_CODENAME ]] || die "$OS_RELEASE has no VERSION_CODENAME"
}

# The `name==version` lines of requirements-neuron.txt.
pip_pins() { grep -E '^[A-Za-z0-9_.-]+==' "$SRC_DIR/$REQUIREMENTS"; }

apt_list() {
  local pin
  for pin in "${NEURON_APT_PINS[@]}"; do echo "${pin}*"; done
  echo "linux-headers-$(uname -r)"
  printf '%s\n' bubblewrap apparmor git rsync curl ca-certificates "${PYTHON_APT[@]}"
}

worker_env() {
  cat <<ENV
# Written by deployments/trn1/bootstrap.sh; re-run it to change this file.
PREFECT_API_URL=${PREFECT_API_URL:-}
ANNAPURNA_HOME=/var/lib/annapurna
ANNAPURNA_CHECKOUT=${APP_DIR}
ANNAPURNA_MIN_ISOLATION=bwrap
ANNAPURNA_STORAGE=${ANNAPURNA_STORAGE:-s3}
ANNAPURNA_INDEX=${ANNAPURNA_INDEX:-opensearch}
ANNAPURNA_OPENSEARCH_URL=${ANNAPURNA_OPENSEARCH_URL:-}
ANNAPURNA_NEURON_COMPILE_CACHE=${COMPILE_CACHE}
ANNAPURNA_CLOUDWATCH=${ANNAPURNA_CLOUDWATCH:-true}
ANNAPURNA_INSTANCE_TYPE=${INSTANCE_TYPE}
PATH=${WORKER_PATH}
ENV
}

unit_file() {
  sed "s|@USER@|$APP_USER|g; s|@DIR@|$APP_DIR|g" "$SRC_DIR/deployments/trn1/annapurna-worker.service"
}

# The instance type for the CloudWatch dimension: from the instance metadata (IMDSv2).
instance_type() {
  if [[ -n ${ANNAPURNA_INSTANCE_TYPE:-} ]]; then echo "$ANNAPURNA_INSTANCE_TYPE"; return; fi
  if ((DRY_RUN)); then echo "trn1.2xlarge"; return; fi
  local token
  token=$(curl -s -m 2 -X PUT http://169.254.169.254/latest/api/token \
    -H 'X-aws-ec2-metadata-token-ttl-seconds: 60' || true)
  curl -sf -m 2 -H "X-aws-ec2-metadata-token: $token" \
    http://169.254.169.254/latest/meta-data/instance-type || echo trn1.2xlarge
}

print_plan() {
  echo "Annapurna trn1 bootstrap, dry run: nothing is changed or downloaded."
  echo "os: $OS_ID $OS_VERSION ($OS_CODENAME), from $OS_RELEASE"
  echo "python: $PYTHON ($PYTHON_NOTE)"
  echo "neuron sdk: $NEURON_SDK"
  echo "apt source: deb [signed-by=$KEYRING] $NEURON_APT_URL $OS_CODENAME main"
  echo "apt packages:"
  local pkg name
  while read -r pkg; do
    name=${pkg%%=*}
    if pkg_installed "$name" "$(pin_version "$pkg")"; then
      echo "  $pkg (installed)"
    else
      echo "  $pkg"
    fi
  done < <(apt_list)
  echo "pip requirements ($REQUIREMENTS, --extra-index-url https://pip.repos.neuron.amazonaws.com):"
  pip_pins | sed 's/^/  /'
  echo "  then: pip install --no-deps -e $APP_DIR; pip install -r deployments/trn1/requirements-worker.txt"
  echo "files:"
  echo "  $KEYRING (downloaded once from $NEURON_KEY_URL)"
  echo "  $APT_SOURCE"
  echo "  $ENV_FILE"
  echo "  $APPARMOR_PROFILE (where $USERNS_SYSCTL exists)"
  echo "  $UNIT_FILE"
  echo "worker user: $APP_USER; app dir: $APP_DIR; compile cache: $COMPILE_CACHE"
  [[ -n ${PREFECT_API_URL:-} ]] || echo "PREFECT_API_URL: unset (a real run requires it)"
  echo
  echo "steps:"
}

step_neuron_apt() {
  echo "[1] Neuron apt repository and packages (Neuron SDK $NEURON_SDK), $PYTHON and tools"
  local pkg missing=()
  # The key once, into /etc/apt/keyrings (not the deprecated apt-key), used by this source only.
  if [[ ! -s $KEYRING ]]; then
    run install -d -m 0755 /etc/apt/keyrings
    run curl -fsSL -o "$KEYRING" "$NEURON_KEY_URL"
  fi
  echo "deb [signed-by=$KEYRING] $NEURON_APT_URL $OS_CODENAME main" | write_if_changed "$APT_SOURCE" 0644 || true
  while read -r pkg; do
    pkg_installed "${pkg%%=*}" "$(pin_version "$pkg")" || missing+=("$pkg")
  done < <(apt_list)
  if ((${#missing[@]} == 0)); then
    echo "  = every package is installed at its version: no apt-get update, no download"
  else
    run apt-get update -q
    if [[ $PYTHON == python3.11 ]] && ! ((DRY_RUN)) && ! apt-cache show python3.11-venv >/dev/null 2>&1; then
      run apt-get install -y -q software-properties-common
      run add-apt-repository -y ppa:deadsnakes/ppa
      run apt-get update -q
    elif [[ $PYTHON == python3.11 ]] && ((DRY_RUN)); then
      echo "  (if the Ubuntu archive has no python3.11-venv: add-apt-repository -y ppa:deadsnakes/ppa; apt-get update)"
    fi
    # --allow-downgrades / --allow-change-held-packages: the pins win over what a DLAMI or an
    # earlier run left (the Neuron packages are held below so unattended upgrades leave them).
    run env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --allow-downgrades \
      --allow-change-held-packages "${missing[@]}"
    RESTART_REASONS+=("packages")
  fi
  local names=()
  for pkg in "${NEURON_APT_PINS[@]}"; do names+=("${pkg%%=*}"); done
  if ((DRY_RUN)) || [[ $(apt-mark showhold "${names[@]}" | wc -l) -ne ${#names[@]} ]]; then
    run apt-mark hold "${names[@]}"
  fi
  if ! ((DRY_RUN)); then
    command -v "$PYTHON" >/dev/null || die "$PYTHON is not installed"
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
      die "$PYTHON is $("$PYTHON" -V 2>&1); the project needs 3.11+"
    log "python: $("$PYTHON" -V 2>&1) ($PYTHON)"
  fi
}

step_app() {
  echo "[2] the project in $APP_DIR and its venv ($PYTHON), owned by $APP_USER"
  run install -d -o "$APP_USER" /var/lib/annapurna "$APP_DIR"
  run install -d -m 0755 /etc/annapurna
  if [[ $COMPILE_CACHE != s3://* ]]; then
    run install -d -o "$APP_USER" "$COMPILE_CACHE"
  fi
  if [[ $SRC_DIR != "$APP_DIR" ]]; then
    # No owner/group from the source (chown below makes them the worker's), and nothing that
    # pip or Python write in the copy (nor directory times, which they touch), so that an
    # unchanged checkout syncs nothing and does not restart the worker.
    local sync=(rsync -a --no-owner --no-group --omit-dir-times --itemize-changes --exclude .venv --exclude .demo
      --exclude '*.egg-info' --exclude __pycache__ --exclude .pytest_cache "$SRC_DIR/" "$APP_DIR/")
    if ((DRY_RUN)); then
      run "${sync[@]}"
    elif [[ -n $("${sync[@]}") ]]; then
      RESTART_REASONS+=("code")
    fi
  fi
  run chown -R "$APP_USER:" "$APP_DIR"
  local venv_py=$APP_DIR/.venv/bin/python
  if [[ -x $venv_py ]] && "$venv_py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "  = $APP_DIR/.venv exists ($("$venv_py" -V 2>&1))"
  else
    # A venv left by an older bootstrap (Python 3.10 on 22.04) cannot run the project.
    [[ -e $APP_DIR/.venv ]] && run rm -rf "$APP_DIR/.venv"
    as_user "$PYTHON" -m venv "$APP_DIR/.venv"
  fi
  local pip=$APP_DIR/.venv/bin/pip before=""
  ((DRY_RUN)) || before=$("$pip" freeze 2>/dev/null || true)
  as_user env PIP_DISABLE_PIP_VERSION_CHECK=1 "$pip" install -q 'pip>=24'
  as_user env PIP_DISABLE_PIP_VERSION_CHECK=1 "$pip" install -q -r "$APP_DIR/$REQUIREMENTS"
  as_user env PIP_DISABLE_PIP_VERSION_CHECK=1 "$pip" install -q --no-deps -e "$APP_DIR"
  as_user env PIP_DISABLE_PIP_VERSION_CHECK=1 "$pip" install -q -r "$APP_DIR/deployments/trn1/requirements-worker.txt"
  if ! ((DRY_RUN)) && [[ $before != $("$pip" freeze 2>/dev/null || true) ]]; then
    RESTART_REASONS+=("python packages")
  fi
}

step_env() {
  echo "[3] $ENV_FILE (read by the worker and its flow runs; secrets stay in Prefect blocks / the instance role)"
  if ((DRY_RUN)); then worker_env | sed 's/^/    | /'; fi
  if worker_env | write_if_changed "$ENV_FILE" 0644; then RESTART_REASONS+=("worker.env"); fi
}

step_apparmor() {
  echo "[4] AppArmor: let bwrap create user namespaces (only where $USERNS_SYSCTL exists)"
  if [[ -e $USERNS_SYSCTL ]]; then
    local changed=0
    write_if_changed "$APPARMOR_PROFILE" 0644 <"$SRC_DIR/deployments/trn1/apparmor-bwrap" && changed=1
    if ((changed)) || ! grep -qs '^bwrap ' "$APPARMOR_LOADED"; then
      run apparmor_parser -r "$APPARMOR_PROFILE"
    else
      echo "  = profile bwrap is loaded"
    fi
  elif ((DRY_RUN)); then
    echo "  $USERNS_SYSCTL is absent on this machine ($(uname -r)), so here the profile step is skipped;"
    echo "  where it exists (Ubuntu 24.04): install deployments/trn1/apparmor-bwrap as $APPARMOR_PROFILE, then"
    echo "  + apparmor_parser -r $APPARMOR_PROFILE"
  else
    log "$USERNS_SYSCTL is absent: no AppArmor user-namespace restriction, no profile needed"
  fi
  echo "  then, as $APP_USER, bubblewrap must work (the worker requires ANNAPURNA_MIN_ISOLATION=bwrap):"
  if ((DRY_RUN)); then
    as_user "${BWRAP_CHECK[@]}"
  elif ! sudo -u "$APP_USER" -H -- "${BWRAP_CHECK[@]}"; then
    die "bubblewrap does not work for $APP_USER ('${BWRAP_CHECK[*]}' failed): the worker would refuse to run programs. Check 'sysctl kernel.apparmor_restrict_unprivileged_userns', 'aa-status | grep bwrap' and $APPARMOR_PROFILE."
  else
    log "bubblewrap works for $APP_USER"
  fi
  # The same check the worker makes with its own bwrap command line (PID, network, IPC, UTS).
  as_user "$APP_DIR/.venv/bin/python" -c "$DETECT_CHECK" ||
    die "the worker's own sandbox check does not find bwrap for $APP_USER"
}

step_service() {
  echo "[5] systemd unit annapurna-worker"
  local unit_changed=0
  if ((DRY_RUN)); then unit_file | sed 's/^/    | /'; fi
  unit_file | write_if_changed "$UNIT_FILE" 0644 && unit_changed=1
  ((unit_changed)) && RESTART_REASONS+=("unit")
  ((unit_changed)) && run systemctl daemon-reload
  run systemctl enable annapurna-worker
  if ((DRY_RUN)); then
    echo "  + systemctl restart annapurna-worker   (only when the unit, worker.env, the code or packages changed)"
    echo "  + systemctl start annapurna-worker     (otherwise: a no-op when it is running)"
  elif ((${#RESTART_REASONS[@]})); then
    log "restarting annapurna-worker (changed: ${RESTART_REASONS[*]})"
    systemctl restart annapurna-worker
  else
    systemctl start annapurna-worker
    log "nothing changed; annapurna-worker left running"
  fi
}

main() {
  parse_args "$@"
  detect_os
  if ((DRY_RUN)); then
    INSTANCE_TYPE=$(instance_type)
    print_plan
  else
    ((EUID == 0)) || die "run as root (sudo); --dry-run needs no root"
    cd /  # commands run as the worker's user must not start in a directory it cannot read
    id "$APP_USER" >/dev/null 2>&1 || die "user $APP_USER does not exist (set ANNAPURNA_USER)"
    [[ -n ${PREFECT_API_URL:-} ]] || die "set PREFECT_API_URL to the Prefect server the worker polls"
    log "$OS_ID $OS_VERSION ($OS_CODENAME): python $PYTHON, Neuron SDK $NEURON_SDK"
    INSTANCE_TYPE=$(instance_type)
  fi
  step_neuron_apt
  step_app
  step_env
  step_apparmor
  step_service
  if ((DRY_RUN)); then
    echo "  + neuron-ls"
    echo "dry run done: nothing was changed."
  else
    /opt/aws/neuron/bin/neuron-ls || log "neuron-ls failed: no NeuronCores visible yet (is this a trn1?)"
    log "annapurna-worker is running: journalctl -u annapurna-worker -f"
    log "check the Neuron path end to end: sudo -u $APP_USER bash $APP_DIR/deployments/trn1/smoke.sh"
  fi
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  main "$@"
fi
