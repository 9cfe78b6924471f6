#!/usr/bin/env bash
# Bootstraps a trn1 instance (Ubuntu 22.04) as Annapurna's `trainium` worker:
# the Neuron driver and runtime from AWS's apt repository, a venv with the Neuron PyTorch
# stack (Neuron SDK 2.29, from AWS's pip repository) and this project's worker part, and
# the systemd unit that runs `prefect worker start --pool trainium`.
#
#   sudo ANNAPURNA_USER=ubuntu PREFECT_API_URL=http://prefect.internal:4200/api \
#        bash deployments/trn1/bootstrap.sh
set -euo pipefail

APP_USER=${ANNAPURNA_USER:-ubuntu}
APP_DIR=${ANNAPURNA_DIR:-/opt/annapurna}
SRC_DIR=$(cd "$(dirname "$0")/../.." && pwd)
: "${PREFECT_API_URL:?set PREFECT_API_URL to the Prefect server the worker polls}"

# 1. Neuron driver, runtime and tools (apt.repos.neuron.amazonaws.com)
. /etc/os-release
echo "deb https://apt.repos.neuron.amazonaws.com ${VERSION_CODENAME} main" >/etc/apt/sources.list.d/neuron.list
wget -qO - https://apt.repos.neuron.amazonaws.com/GPG-PUB-KEY-AMAZON-AWS-NEURON.PUB | apt-key add -
apt-get update -q
apt-get install -y -q linux-headers-"$(uname -r)" aws-neuronx-dkms aws-neuronx-runtime-lib \
  aws-neuronx-collectives aws-neuronx-tools bubblewrap python3-venv git

# 2. The project and its venv, owned by the worker's user (the worker never runs as root)
mkdir -p "$APP_DIR" /etc/annapurna /var/cache/annapurna/neuron-compile-cache
rsync -a --exclude .venv --exclude .demo "$SRC_DIR/" "$APP_DIR/"
chown -R "$APP_USER" "$APP_DIR" /var/cache/annapurna
sudo -u "$APP_USER" bash -euo pipefail -c "
  cd '$APP_DIR'
  python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -r deployments/trn1/requirements-neuron.txt
  .venv/bin/pip install -q --no-deps -e .
  .venv/bin/pip install -q -r deployments/trn1/requirements-worker.txt
"

# 3. Settings the worker and its flow runs read (secrets stay in Prefect blocks / the instance role)
cat >/etc/annapurna/worker.env <<ENV
PREFECT_API_URL=${PREFECT_API_URL}
ANNAPURNA_HOME=/var/lib/annapurna
ANNAPURNA_STORAGE=${ANNAPURNA_STORAGE:-s3}
ANNAPURNA_INDEX=${ANNAPURNA_INDEX:-opensearch}
ANNAPURNA_OPENSEARCH_URL=${ANNAPURNA_OPENSEARCH_URL:-}
ANNAPURNA_NEURON_COMPILE_CACHE=${ANNAPURNA_NEURON_COMPILE_CACHE:-/var/cache/annapurna/neuron-compile-cache}
ANNAPURNA_CLOUDWATCH=${ANNAPURNA_CLOUDWATCH:-true}
ANNAPURNA_INSTANCE_TYPE=$(curl -s -m 2 http://169.254.169.254/latest/meta-data/instance-type || echo trn1.2xlarge)
ENV
mkdir -p /var/lib/annapurna && chown "$APP_USER" /var/lib/annapurna

# 4. The worker as a service
sed "s|@USER@|$APP_USER|; s|@DIR@|$APP_DIR|" "$APP_DIR/deployments/trn1/annapurna-worker.service" \
  >/etc/systemd/system/annapurna-worker.service
systemctl daemon-reload
systemctl enable --now annapurna-worker
neuron-ls || true
echo "annapurna-worker is running: journalctl -u annapurna-worker -f"
