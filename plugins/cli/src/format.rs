//! `-o table|wide|json|yaml` of the list commands, into the library's
//! [`gitops::output::ListFormat`].

use gitops::output::ListFormat;

/// The `-o` values of list commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ListFormatArg {
    Table,
    Wide,
    Json,
    Yaml,
}

impl From<ListFormatArg> for ListFormat {
    fn from(f: ListFormatArg) -> ListFormat {
        match f {
            ListFormatArg::Table => ListFormat::Table,
            ListFormatArg::Wide => ListFormat::Wide,
            ListFormatArg::Json => ListFormat::Json,
            ListFormatArg::Yaml => ListFormat::Yaml,
        }
    }
}
