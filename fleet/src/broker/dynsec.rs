//! Mosquitto's dynamic-security plugin, protocol only: the JSON commands the fleet sends on
//! `$CONTROL/dynamic-security/v1`, the answers it reads on `…/response`, and the roles Lattice
//! keeps there. No I/O: [`super::external`] sends and receives.
//!
//! Roles (Mosquitto 2.0's dynsec has no `%u`/`%c` substitution in ACLs, so each node gets its
//! own role; checked against 2.0.11):
//!
//! * `lattice-node-{id}`: publish on the node's own `hello`, `status`, `telemetry`, `events` and
//!   `will` topics; subscribe to (and receive) its own `target` topic. Nothing else.
//! * `lattice-fleet`: subscribe to (and receive) every node's upward topics, also as MQTT shared
//!   subscriptions (`$share/{group}/…`, for replicas); publish targets; use the
//!   dynamic-security control topics.
//!
//! A node's client has user name = client id = node id, so nobody else can use its id.

use lattice_wire::topic::{self, Channel};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Where commands go.
pub const CONTROL_TOPIC: &str = "$CONTROL/dynamic-security/v1";
/// Where the plugin answers (to every client subscribed to it; `correlationData` tells whose).
pub const RESPONSE_TOPIC: &str = "$CONTROL/dynamic-security/v1/response";
/// The fleet processes' role.
pub const FLEET_ROLE: &str = "lattice-fleet";
/// Prefix of every node's role.
pub const NODE_ROLE_PREFIX: &str = "lattice-node-";

/// The role of node `node_id`.
pub fn node_role(node_id: &str) -> String {
    format!("{NODE_ROLE_PREFIX}{node_id}")
}

/// The kinds of dynsec ACL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AclType {
    PublishClientSend,
    PublishClientReceive,
    SubscribeLiteral,
    SubscribePattern,
    UnsubscribeLiteral,
    UnsubscribePattern,
}

/// One ACL of a role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acl {
    pub acltype: AclType,
    pub topic: String,
    pub allow: bool,
}

impl Acl {
    fn allow(acltype: AclType, topic: impl Into<String>) -> Acl {
        Acl {
            acltype,
            topic: topic.into(),
            allow: true,
        }
    }
}

/// What node `node_id` may do, and nothing more.
pub fn node_acls(node_id: &str) -> Vec<Acl> {
    let mut acls: Vec<Acl> = Channel::ALL
        .into_iter()
        .filter(|c| c.is_upward())
        .map(|c| Acl::allow(AclType::PublishClientSend, topic::topic(node_id, c)))
        .collect();
    let target = topic::topic(node_id, Channel::Target);
    acls.push(Acl::allow(AclType::SubscribeLiteral, target.clone()));
    acls.push(Acl::allow(AclType::PublishClientReceive, target));
    acls
}

/// What fleet processes may do.
pub fn fleet_acls() -> Vec<Acl> {
    let mut acls = Vec::new();
    for filter in topic::fleet_filters() {
        acls.push(Acl::allow(AclType::SubscribePattern, filter.clone()));
        // Mosquitto checks a shared subscription against its full `$share/…` filter.
        acls.push(Acl::allow(
            AclType::SubscribePattern,
            format!("$share/+/{filter}"),
        ));
        acls.push(Acl::allow(AclType::PublishClientReceive, filter));
    }
    acls.push(Acl::allow(
        AclType::PublishClientSend,
        format!("{}/+/{}", topic::PREFIX, Channel::Target),
    ));
    acls.push(Acl::allow(AclType::PublishClientSend, CONTROL_TOPIC));
    acls.push(Acl::allow(AclType::SubscribeLiteral, RESPONSE_TOPIC));
    acls.push(Acl::allow(AclType::PublishClientReceive, RESPONSE_TOPIC));
    acls
}

/// A password inside a command: serialized as is, never shown by `Debug`.
#[derive(Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Password(String);

impl Password {
    pub fn new(p: impl Into<String>) -> Password {
        Password(p.into())
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A role given to a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoleRef {
    pub rolename: String,
}

/// The commands the fleet uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "command", rename_all = "camelCase")]
pub enum Command {
    CreateRole {
        rolename: String,
        acls: Vec<Acl>,
    },
    GetRole {
        rolename: String,
    },
    DeleteRole {
        rolename: String,
    },
    #[serde(rename = "addRoleACL")]
    AddRoleAcl {
        rolename: String,
        #[serde(flatten)]
        acl: Acl,
    },
    #[serde(rename = "removeRoleACL")]
    RemoveRoleAcl {
        rolename: String,
        acltype: AclType,
        topic: String,
    },
    CreateClient {
        username: String,
        clientid: String,
        password: Password,
        roles: Vec<RoleRef>,
    },
    GetClient {
        username: String,
    },
    DeleteClient {
        username: String,
    },
    DisableClient {
        username: String,
    },
    AddClientRole {
        username: String,
        rolename: String,
    },
}

impl Command {
    /// The command's name, as the plugin spells it.
    pub fn name(&self) -> &'static str {
        match self {
            Command::CreateRole { .. } => "createRole",
            Command::GetRole { .. } => "getRole",
            Command::DeleteRole { .. } => "deleteRole",
            Command::AddRoleAcl { .. } => "addRoleACL",
            Command::RemoveRoleAcl { .. } => "removeRoleACL",
            Command::CreateClient { .. } => "createClient",
            Command::GetClient { .. } => "getClient",
            Command::DeleteClient { .. } => "deleteClient",
            Command::DisableClient { .. } => "disableClient",
            Command::AddClientRole { .. } => "addClientRole",
        }
    }

    /// What it acts on (a client or role name; never a password), for messages.
    pub fn subject(&self) -> String {
        match self {
            Command::CreateRole { rolename, .. }
            | Command::GetRole { rolename }
            | Command::DeleteRole { rolename }
            | Command::AddRoleAcl { rolename, .. }
            | Command::RemoveRoleAcl { rolename, .. } => format!("role {rolename}"),
            Command::CreateClient { username, .. }
            | Command::GetClient { username }
            | Command::DeleteClient { username }
            | Command::DisableClient { username } => format!("client {username}"),
            Command::AddClientRole { username, rolename } => {
                format!("client {username}, role {rolename}")
            }
        }
    }
}

#[derive(Serialize)]
struct Tagged<'a> {
    #[serde(flatten)]
    command: &'a Command,
    #[serde(rename = "correlationData")]
    correlation: &'a str,
}

#[derive(Serialize)]
struct Request<'a> {
    commands: Vec<Tagged<'a>>,
}

/// The payload for `commands`, each tagged with its correlation id. It may carry passwords:
/// never log it.
pub fn encode(commands: &[(String, Command)]) -> Result<Vec<u8>, serde_json::Error> {
    let req = Request {
        commands: commands
            .iter()
            .map(|(correlation, command)| Tagged {
                command,
                correlation,
            })
            .collect(),
    };
    serde_json::to_vec(&req)
}

/// One answer of the plugin.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Response {
    pub command: String,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub data: Option<serde_json::Value>,
    #[serde(rename = "correlationData", default)]
    pub correlation: Option<String>,
}

impl Response {
    /// Ok, or the plugin's error text.
    pub fn outcome(&self) -> Result<(), &str> {
        match &self.error {
            None => Ok(()),
            Some(e) => Err(e.as_str()),
        }
    }

    /// True when the error says the client or role does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self.error.as_deref(),
            Some("Client not found" | "Role not found")
        )
    }
}

#[derive(Deserialize)]
struct Responses {
    responses: Vec<Response>,
}

/// Parses a message from [`RESPONSE_TOPIC`].
pub fn decode(payload: &[u8]) -> Result<Vec<Response>, serde_json::Error> {
    serde_json::from_slice::<Responses>(payload).map(|r| r.responses)
}

#[derive(Deserialize)]
struct RoleData {
    role: RoleBody,
}

#[derive(Deserialize)]
struct RoleBody {
    #[serde(default)]
    acls: Vec<Acl>,
}

#[derive(Deserialize)]
struct ClientData {
    client: ClientBody,
}

#[derive(Deserialize)]
struct RoleName {
    rolename: String,
}

#[derive(Deserialize)]
struct ClientBody {
    #[serde(default)]
    roles: Vec<RoleName>,
}

/// The ACLs in a `getRole` answer's data.
pub fn role_acls(data: &serde_json::Value) -> Result<Vec<Acl>, serde_json::Error> {
    RoleData::deserialize(data).map(|d| d.role.acls)
}

/// The role names in a `getClient` answer's data.
pub fn client_roles(data: &serde_json::Value) -> Result<Vec<String>, serde_json::Error> {
    ClientData::deserialize(data).map(|d| d.client.roles.into_iter().map(|r| r.rolename).collect())
}

/// The commands that make role `rolename` hold exactly `wanted`: create it when it does not
/// exist (`existing` = `None`), otherwise add what is missing and remove what is not wanted.
pub fn sync_role(rolename: &str, existing: Option<&[Acl]>, wanted: &[Acl]) -> Vec<Command> {
    let Some(existing) = existing else {
        return vec![Command::CreateRole {
            rolename: rolename.to_string(),
            acls: wanted.to_vec(),
        }];
    };
    let key = |a: &Acl| (a.acltype, a.topic.clone());
    let have: BTreeMap<_, bool> = existing.iter().map(|a| (key(a), a.allow)).collect();
    let want: BTreeMap<_, bool> = wanted.iter().map(|a| (key(a), a.allow)).collect();
    let mut cmds = Vec::new();
    for ((acltype, topic), allow) in &have {
        if want.get(&(*acltype, topic.clone())) != Some(allow) {
            cmds.push(Command::RemoveRoleAcl {
                rolename: rolename.to_string(),
                acltype: *acltype,
                topic: topic.clone(),
            });
        }
    }
    for ((acltype, topic), allow) in &want {
        if have.get(&(*acltype, topic.clone())) != Some(allow) {
            cmds.push(Command::AddRoleAcl {
                rolename: rolename.to_string(),
                acl: Acl {
                    acltype: *acltype,
                    topic: topic.clone(),
                    allow: *allow,
                },
            });
        }
    }
    cmds
}

/// Creates node `node_id`'s role and client (user name = client id = node id) in one request.
pub fn add_node(node_id: &str, password: &str) -> Vec<Command> {
    let rolename = node_role(node_id);
    vec![
        Command::CreateRole {
            rolename: rolename.clone(),
            acls: node_acls(node_id),
        },
        Command::CreateClient {
            username: node_id.to_string(),
            clientid: node_id.to_string(),
            password: Password::new(password),
            roles: vec![RoleRef { rolename }],
        },
    ]
}

/// After [`add_node`] partly failed: undoes what did succeed (and only that, so a name that
/// already existed is never deleted).
pub fn undo_add_node(node_id: &str, answers: &[Response]) -> Vec<Command> {
    let ok = |name: &str| {
        answers
            .iter()
            .any(|r| r.command == name && r.error.is_none())
    };
    let mut cmds = Vec::new();
    if ok("createClient") {
        cmds.push(Command::DeleteClient {
            username: node_id.to_string(),
        });
    }
    if ok("createRole") {
        cmds.push(Command::DeleteRole {
            rolename: node_role(node_id),
        });
    }
    cmds
}

/// Removes node `node_id`'s client and role.
pub fn remove_node(node_id: &str) -> Vec<Command> {
    vec![
        Command::DeleteClient {
            username: node_id.to_string(),
        },
        Command::DeleteRole {
            rolename: node_role(node_id),
        },
    ]
}

/// Disables node `node_id`'s client: the broker refuses it from now on and disconnects it.
pub fn revoke_node(node_id: &str) -> Command {
    Command::DisableClient {
        username: node_id.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_node_may_publish_only_its_upward_topics_and_read_only_its_target() {
        let acls = node_acls("n-a");
        let send: Vec<_> = acls
            .iter()
            .filter(|a| a.acltype == AclType::PublishClientSend)
            .map(|a| a.topic.as_str())
            .collect();
        assert_eq!(
            send,
            [
                "lattice/v1/nodes/n-a/hello",
                "lattice/v1/nodes/n-a/status",
                "lattice/v1/nodes/n-a/telemetry",
                "lattice/v1/nodes/n-a/events",
                "lattice/v1/nodes/n-a/will",
            ]
        );
        let rest: Vec<_> = acls
            .iter()
            .filter(|a| a.acltype != AclType::PublishClientSend)
            .map(|a| (a.acltype, a.topic.as_str()))
            .collect();
        assert_eq!(
            rest,
            [
                (AclType::SubscribeLiteral, "lattice/v1/nodes/n-a/target"),
                (AclType::PublishClientReceive, "lattice/v1/nodes/n-a/target"),
            ]
        );
        assert!(acls
            .iter()
            .all(|a| a.allow && !a.topic.contains(['+', '#'])));
    }

    #[test]
    fn the_fleet_reads_upward_topics_sends_targets_and_uses_the_control_topics() {
        let acls = fleet_acls();
        let has = |t: AclType, topic: &str| acls.iter().any(|a| a.acltype == t && a.topic == topic);
        assert!(has(AclType::SubscribePattern, "lattice/v1/nodes/+/status"));
        assert!(has(
            AclType::SubscribePattern,
            "$share/+/lattice/v1/nodes/+/will"
        ));
        assert!(has(
            AclType::PublishClientReceive,
            "lattice/v1/nodes/+/hello"
        ));
        assert!(has(AclType::PublishClientSend, "lattice/v1/nodes/+/target"));
        assert!(has(AclType::PublishClientSend, CONTROL_TOPIC));
        assert!(has(AclType::SubscribeLiteral, RESPONSE_TOPIC));
        assert!(!has(AclType::SubscribePattern, "lattice/v1/nodes/+/target"));
        assert!(!acls.iter().any(|a| a.topic.contains('#')));
    }

    #[test]
    fn commands_encode_as_the_plugin_expects_with_correlation_data() {
        let cmds: Vec<(String, Command)> = add_node("n-a", "pw-secret")
            .into_iter()
            .enumerate()
            .map(|(i, c)| (format!("c{i}"), c))
            .collect();
        let v: serde_json::Value = serde_json::from_slice(&encode(&cmds).unwrap()).unwrap();
        assert_eq!(v["commands"][0]["command"], "createRole");
        assert_eq!(v["commands"][0]["rolename"], "lattice-node-n-a");
        assert_eq!(v["commands"][0]["correlationData"], "c0");
        assert_eq!(
            v["commands"][0]["acls"][0],
            json!({"acltype": "publishClientSend", "topic": "lattice/v1/nodes/n-a/hello", "allow": true})
        );
        assert_eq!(
            v["commands"][1],
            json!({"command": "createClient", "username": "n-a", "clientid": "n-a",
                   "password": "pw-secret", "roles": [{"rolename": "lattice-node-n-a"}],
                   "correlationData": "c1"})
        );
        let acl = encode(&[(
            "x".into(),
            Command::AddRoleAcl {
                rolename: "r".into(),
                acl: Acl::allow(AclType::SubscribeLiteral, "t"),
            },
        )])
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&acl).unwrap();
        assert_eq!(
            v["commands"][0],
            json!({"command": "addRoleACL", "rolename": "r", "acltype": "subscribeLiteral",
                   "topic": "t", "allow": true, "correlationData": "x"})
        );
        let rm = encode(&[(
            "y".into(),
            Command::RemoveRoleAcl {
                rolename: "r".into(),
                acltype: AclType::PublishClientSend,
                topic: "t".into(),
            },
        )])
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&rm).unwrap();
        assert_eq!(v["commands"][0]["command"], "removeRoleACL");
        assert_eq!(v["commands"][0]["acltype"], "publishClientSend");
    }

    #[test]
    fn debug_never_shows_a_password() {
        let cmds = add_node("n-a", "pw-secret");
        let shown = format!("{cmds:?}");
        assert!(!shown.contains("pw-secret"), "{shown}");
        assert!(shown.contains("<redacted>"));
        assert_eq!(cmds[1].subject(), "client n-a");
    }

    #[test]
    fn answers_decode_with_errors_data_and_correlation() {
        // Verbatim from Mosquitto 2.0.11.
        let raw = br#"{"responses":[{"command":"createClient","error":"Client already exists","correlationData":"c1"},{"command":"addClientRole","correlationData":"c3"},{"command":"getRole","data":{"role":{"rolename":"rn1","acls":[{"acltype":"publishClientSend","topic":"lattice/v1/nodes/n-1/hello","priority":0,"allow":true},{"acltype":"subscribeLiteral","topic":"lattice/v1/nodes/n-1/target","priority":0,"allow":true}]}},"correlationData":"c5"},{"command":"getClient","data":{"client":{"username":"admin","textname":"Dynsec admin user","roles":[{"rolename":"admin"}],"groups":[]}},"correlationData":"a"},{"command":"disableClient","error":"Client not found","correlationData":"c4"}]}"#;
        let r = decode(raw).unwrap();
        assert_eq!(r.len(), 5);
        assert_eq!(r[0].outcome(), Err("Client already exists"));
        assert_eq!(r[0].correlation.as_deref(), Some("c1"));
        assert_eq!(r[1].outcome(), Ok(()));
        let acls = role_acls(r[2].data.as_ref().unwrap()).unwrap();
        assert_eq!(acls.len(), 2);
        assert_eq!(acls[1].acltype, AclType::SubscribeLiteral);
        assert_eq!(
            client_roles(r[3].data.as_ref().unwrap()).unwrap(),
            ["admin"]
        );
        assert!(r[4].is_not_found() && !r[0].is_not_found());
        assert!(decode(b"not json").is_err());
        assert!(decode(br#"{"other":1}"#).is_err());
    }

    #[test]
    fn sync_role_creates_a_missing_role_and_repairs_an_existing_one() {
        let wanted = fleet_acls();
        assert_eq!(
            sync_role(FLEET_ROLE, None, &wanted),
            vec![Command::CreateRole {
                rolename: FLEET_ROLE.into(),
                acls: wanted.clone()
            }]
        );
        assert!(sync_role(FLEET_ROLE, Some(&wanted), &wanted).is_empty());
        let mut drifted = wanted[1..].to_vec();
        drifted.push(Acl::allow(AclType::SubscribePattern, "#"));
        let mut flipped = drifted[0].clone();
        flipped.allow = false;
        drifted[0] = flipped.clone();
        let cmds = sync_role(FLEET_ROLE, Some(&drifted), &wanted);
        let names: Vec<_> = cmds.iter().map(|c| (c.name(), c.clone())).collect();
        // The extra "#" and the flipped ACL go; the missing and the flipped ones come back.
        assert!(cmds.contains(&Command::RemoveRoleAcl {
            rolename: FLEET_ROLE.into(),
            acltype: AclType::SubscribePattern,
            topic: "#".into()
        }));
        assert!(cmds.contains(&Command::RemoveRoleAcl {
            rolename: FLEET_ROLE.into(),
            acltype: flipped.acltype,
            topic: flipped.topic.clone()
        }));
        for a in [&wanted[0], &wanted[1]] {
            assert!(
                cmds.contains(&Command::AddRoleAcl {
                    rolename: FLEET_ROLE.into(),
                    acl: a.clone()
                }),
                "{names:?}"
            );
        }
        assert_eq!(cmds.len(), 4, "{names:?}");
        // Removals come first, so a flipped ACL is replaced, not refused as a duplicate.
        assert!(cmds[..2].iter().all(|c| c.name() == "removeRoleACL"));
    }

    #[test]
    fn a_failed_add_undoes_only_what_succeeded() {
        let answer = |command: &str, error: Option<&str>| Response {
            command: command.into(),
            error: error.map(str::to_string),
            data: None,
            correlation: None,
        };
        let both_ok = [answer("createRole", None), answer("createClient", None)];
        assert_eq!(undo_add_node("n-a", &both_ok), remove_node("n-a"));
        let client_failed = [
            answer("createRole", None),
            answer("createClient", Some("Client already exists")),
        ];
        assert_eq!(
            undo_add_node("n-a", &client_failed),
            vec![Command::DeleteRole {
                rolename: "lattice-node-n-a".into()
            }]
        );
        let role_failed = [
            answer("createRole", Some("Role already exists")),
            answer("createClient", Some("Role not found")),
        ];
        assert!(undo_add_node("n-a", &role_failed).is_empty());
    }
}
