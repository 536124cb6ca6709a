//! The shapes of Kafka's config keys (see `kafka_keys` for the keys themselves).

/// A config value's type, as DescribeConfigs v3+ reports it (Kafka's `ConfigType`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ConfigType {
    Boolean,
    String,
    Int,
    Short,
    Long,
    Double,
    List,
    Class,
    Password,
}

impl ConfigType {
    /// DescribeConfigs v3+ `config_type`.
    pub fn code(self) -> i8 {
        match self {
            ConfigType::Boolean => 1,
            ConfigType::String => 2,
            ConfigType::Int => 3,
            ConfigType::Short => 4,
            ConfigType::Long => 5,
            ConfigType::Double => 6,
            ConfigType::List => 7,
            ConfigType::Class => 8,
            ConfigType::Password => 9,
        }
    }

    /// Kafka's check of a value's form (`ConfigDef.parseType`), with Kafka's message.
    pub fn check(self, name: &str, value: &str) -> Result<(), String> {
        let bad = |what: &str| {
            Err(format!(
                "Invalid value {value} for configuration {name}: {what}"
            ))
        };
        let v = value.trim();
        match self {
            ConfigType::Boolean => match v.to_ascii_lowercase().as_str() {
                "true" | "false" => Ok(()),
                _ => bad("Expected value to be either true or false"),
            },
            ConfigType::Int => v
                .parse::<i32>()
                .map(drop)
                .or_else(|_| bad("Not a number of type INT")),
            ConfigType::Short => v
                .parse::<i16>()
                .map(drop)
                .or_else(|_| bad("Not a number of type SHORT")),
            ConfigType::Long => v
                .parse::<i64>()
                .map(drop)
                .or_else(|_| bad("Not a number of type LONG")),
            ConfigType::Double => v
                .parse::<f64>()
                .map(drop)
                .or_else(|_| bad("Not a number of type DOUBLE")),
            ConfigType::String | ConfigType::List | ConfigType::Class | ConfigType::Password => {
                Ok(())
            }
        }
    }
}

/// A broker config key as Kafka lists it.
#[derive(Debug)]
pub struct BrokerKey {
    pub name: &'static str,
    pub kind: ConfigType,
    /// Kafka's default (`None`: no default).
    pub default: Option<&'static str>,
    /// Kafka changes it without a restart (AlterConfigs on a broker or the cluster default).
    pub dynamic: bool,
    /// Kafka never shows its value.
    pub sensitive: bool,
}

impl BrokerKey {
    pub const fn new(
        name: &'static str,
        kind: ConfigType,
        default: Option<&'static str>,
        dynamic: bool,
        sensitive: bool,
    ) -> BrokerKey {
        BrokerKey {
            name,
            kind,
            default,
            dynamic,
            sensitive,
        }
    }
}

/// A topic config key, with the broker key that supplies its value when the topic does not set it.
#[derive(Debug)]
pub struct TopicKey {
    pub name: &'static str,
    pub kind: ConfigType,
    pub broker: Option<&'static str>,
    pub default: Option<&'static str>,
}

impl TopicKey {
    pub const fn new(
        name: &'static str,
        kind: ConfigType,
        broker: Option<&'static str>,
        default: Option<&'static str>,
    ) -> TopicKey {
        TopicKey {
            name,
            kind,
            broker,
            default,
        }
    }
}

/// A group config key (KIP-848 and share groups), with the broker key that supplies its default.
pub type GroupKey = TopicKey;
