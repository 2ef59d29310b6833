# Vault Agent for an application that uses the Affix client "prod":
#
#   vault agent -config=agent.hcl
#
# It logs in with AppRole (a role whose token_policies is the consumer
# policy of docs/consumers.md: read on secret/data/affix/prod), re-reads the
# record every static_secret_render_interval, and writes client_secret and
# client_id to files the application reads, each without a newline.
#
# This file is the one the project's test runs (TestConsumerVaultAgent in
# cmd/affix-rotator, through internal/agenttest): the test replaces only the
# Vault address, the file paths under /etc/my-app and /run/my-app, and the
# render interval, and fails if any of them is no longer here, so this
# example cannot drift from what is tested.

vault {
  address = "https://vault.example.com:8200"
  # ca_cert = "/etc/my-app/vault-ca.pem"   # when Vault's certificate is not signed by a CA the system trusts
}

auto_auth {
  method "approle" {
    # mount_path = "auth/approle"          # the default
    config = {
      role_id_file_path                   = "/etc/my-app/vault-role-id"
      secret_id_file_path                 = "/etc/my-app/vault-secret-id"
      remove_secret_id_file_after_reading = false
    }
  }
}

template_config {
  # How often the agent reads a KV v2 secret again (a KV secret has no lease
  # to watch). This is the consumer's refresh interval: the rotator's
  # grace_period must exceed it plus the application's restart time.
  static_secret_render_interval = "5m"
  # Keep retrying when Vault is unreachable instead of exiting.
  exit_on_retry_failure = false
}

template {
  source      = "/etc/my-app/client_secret.ctmpl"
  destination = "/run/my-app/affix-client-secret"
  perms       = "0600"
  # command   = "systemctl reload my-app"   # make the application read the new secret, if it does not re-read the file itself
}

template {
  source      = "/etc/my-app/client_id.ctmpl"
  destination = "/run/my-app/affix-client-id"
  perms       = "0600"
}
