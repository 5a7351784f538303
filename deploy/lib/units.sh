# shellcheck shell=bash
# Helpers shared by the deploy scripts: the command line of a systemd unit, so that scripts
# which start Sluice by hand (deploy/netns/up) run exactly what the installed units run.

# unit_command UNIT_FILE BIN_DIR CONFIG [INSTANCE]: sets the array `unit_command_words` to the
# unit's ExecStart command line, with the binary taken from BIN_DIR instead of the unit's
# directory, every /etc/sluice/*.toml argument replaced by CONFIG and %i by INSTANCE. Fails
# when the unit has no ExecStart, or one that names no /etc/sluice/*.toml configuration.
unit_command() {
  local unit=$1 bin_dir=$2 config=$3 instance=${4:-} line word replaced=0
  line=$(sed -n 's/^ExecStart=//p' "$unit")
  if [[ -z $line || $line == *$'\n'* ]]; then
    echo "unit_command: $unit has no single ExecStart= line" >&2
    return 1
  fi
  # Leading special-executable prefixes (-, @, :, +, !) are systemd's, not the command's.
  line=${line##[-@:+!]}
  line=${line//%i/$instance}
  unit_command_words=()
  read -r -a words <<<"$line"
  for word in "${words[@]}"; do
    if ((${#unit_command_words[@]} == 0)); then
      word=$bin_dir/${word##*/}
    elif [[ $word == /etc/sluice/*.toml ]]; then
      word=$config
      replaced=1
    fi
    unit_command_words+=("$word")
  done
  if ((replaced == 0)); then
    echo "unit_command: the ExecStart of $unit names no /etc/sluice/*.toml" >&2
    return 1
  fi
}
