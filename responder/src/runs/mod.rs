//! Playbooks declared in the configuration, at run time: the document the CLI ships beside the
//! responder package (`document`), what the actions do in a member account (`actions`, and the
//! built-in containments and remediations as steps: `containments`, `remediations`), and the live read of a run's resource that
//! conditions see (`resource`). The engine drives runs
//! (`engine::runs`); the language and the state machine are the `quell-playbook` crate's.

pub mod actions;
pub mod containments;
pub mod document;
pub mod remediations;
pub mod resource;
pub mod webhook;
