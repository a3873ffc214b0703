//! Templates and StackSet definitions, compiled into the binary so `quell` works from any folder.

pub struct TemplateSource {
    /// File name of the rendered template.
    pub file: &'static str,
    pub source: &'static str,
}

pub const SECURITY: TemplateSource = TemplateSource {
    file: "security.yaml",
    source: include_str!("../../templates/security.yaml.hbs"),
};
pub const ARTIFACTS: TemplateSource = TemplateSource {
    file: "artifacts.yaml",
    source: include_str!("../../templates/artifacts.yaml.hbs"),
};
pub const MANAGEMENT: TemplateSource = TemplateSource {
    file: "management.yaml",
    source: include_str!("../../templates/management.yaml.hbs"),
};
pub const MEMBER_ROLES: TemplateSource = TemplateSource {
    file: "member-roles.yaml",
    source: include_str!("../../templates/member-roles.yaml.hbs"),
};
pub const MEMBER_REGIONAL: TemplateSource = TemplateSource {
    file: "member-regional.yaml",
    source: include_str!("../../templates/member-regional.yaml.hbs"),
};

pub const ALL_TEMPLATES: [&TemplateSource; 5] = [
    &ARTIFACTS,
    &SECURITY,
    &MANAGEMENT,
    &MEMBER_ROLES,
    &MEMBER_REGIONAL,
];

/// StackSet definitions, in deployment order.
pub const STACKSETS: [&str; 2] = [
    include_str!("../../stacksets/member-roles.yaml"),
    include_str!("../../stacksets/member-regional.yaml"),
];
