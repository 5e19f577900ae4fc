//! Ballista codecs for cliptta's plan nodes.
//!
//! [`ClipTtaLogicalCodec`] carries a `cliptta(...)` table from the client to the scheduler;
//! [`ClipTtaPhysicalCodec`] carries `ClipTtaExec` and `ImageListingExec` from the scheduler to
//! the executors. Both wrap Ballista's own codecs (shuffle readers and writers, file formats) and
//! hand them every node that is not ours, so one codec serves the whole plan. What travels is
//! configuration ([`super::config`]): the receiving process rebuilds stores from URLs and keys,
//! loads the model through the process-wide cache (`model::load_cached`, once per process) and
//! checks its content hash, and resumes the shipped initial state from a local copy.

use std::sync::Arc;

use ballista_core::serde::{BallistaLogicalExtensionCodec, BallistaPhysicalExtensionCodec};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::TableProvider;
use datafusion::datasource::file_format::FileFormatFactory;
use datafusion::common::{plan_err, DataFusionError, Result, TableReference};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{Extension, LogicalPlan};
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::logical_plan::LogicalExtensionCodec;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};

use super::config::{
    options_from_wire as from_wire, options_to_wire as to_wire,
    absolute_location, order_from_wire, order_to_wire, state_dir, Envelope, ExecConfig, Kind, ListingConfig,
    ProviderConfig, SourceConfig, StateBytes,
};
use crate::source::ImageLocation;
use crate::sql::{resolve_store, ClipTtaExec, ClipTtaOptions, ClipTtaProvider, ImageListingExec, ImageSource, ProviderSource};

fn json<T: serde::Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| DataFusionError::External(Box::new(e)))
}

fn parse<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| DataFusionError::Execution(format!("cannot decode cliptta {what}: {e}")))
}

/// The options' wire form plus the bytes of their `resume` state, if any.
fn options_to_wire(options: &ClipTtaOptions) -> Result<(ClipTtaOptions, Option<StateBytes>)> {
    let wire = to_wire(options)?;
    let state = options.resume.as_deref().map(StateBytes::read).transpose()?;
    Ok((wire, state))
}

/// The options back; a shipped state is written locally and becomes `resume`.
fn options_from_wire(wire: ClipTtaOptions, state: Option<StateBytes>) -> Result<Arc<ClipTtaOptions>> {
    let resume = state.map(|s| s.materialise(&state_dir())).transpose()?;
    Ok(Arc::new(from_wire(wire, resume)?))
}

/// A `memory://` store lives in one process: a plan that reads one cannot run elsewhere.
fn check_shippable(location: &ImageLocation) -> Result<()> {
    if location.store_url().scheme() == "memory" {
        return plan_err!(
            "cliptta: location `{}` is in a memory:// store, which exists in one process only and cannot run on a cluster",
            location.original()
        );
    }
    Ok(())
}

/// Logical codec: `cliptta(...)` tables, then Ballista's own nodes.
#[derive(Debug)]
pub struct ClipTtaLogicalCodec {
    inner: Arc<dyn LogicalExtensionCodec>,
}

impl Default for ClipTtaLogicalCodec {
    fn default() -> Self {
        Self { inner: Arc::new(BallistaLogicalExtensionCodec::default()) }
    }
}

impl LogicalExtensionCodec for ClipTtaLogicalCodec {
    fn try_decode(&self, buf: &[u8], inputs: &[LogicalPlan], ctx: &TaskContext) -> Result<Extension> {
        self.inner.try_decode(buf, inputs, ctx)
    }

    fn try_encode(&self, node: &Extension, buf: &mut Vec<u8>) -> Result<()> {
        self.inner.try_encode(node, buf)
    }

    fn try_decode_table_provider(&self, buf: &[u8], table_ref: &TableReference, schema: SchemaRef, ctx: &TaskContext) -> Result<Arc<dyn TableProvider>> {
        if !Envelope::is_ours(buf) {
            return self.inner.try_decode_table_provider(buf, table_ref, schema, ctx);
        }
        let envelope = Envelope::decode(buf)?;
        if envelope.kind != Kind::Provider {
            return plan_err!("cliptta: table `{table_ref}` carries a {:?} node, not a table", envelope.kind);
        }
        let config: ProviderConfig = parse(&envelope.json, "table")?;
        let location = ImageLocation::parse(&config.location)?;
        let options = options_from_wire(config.options, envelope.state)?;
        let provider = ClipTtaProvider::try_new(ProviderSource::Lake(location), ClipTtaOptions::clone(&options))?;
        if provider.schema() != schema {
            return plan_err!("cliptta: table `{table_ref}` decodes to another schema than the client planned (different cliptta versions?)");
        }
        Ok(Arc::new(provider))
    }

    // File formats travel with `COPY ... TO ... STORED AS ...`: Ballista's codec carries them,
    // and the trait's default refuses to decode one, which failed every COPY on a cluster.
    fn try_decode_file_format(&self, buf: &[u8], ctx: &TaskContext) -> Result<Arc<dyn FileFormatFactory>> {
        self.inner.try_decode_file_format(buf, ctx)
    }

    fn try_encode_file_format(&self, buf: &mut Vec<u8>, node: Arc<dyn FileFormatFactory>) -> Result<()> {
        self.inner.try_encode_file_format(buf, node)
    }

    fn try_encode_table_provider(&self, table_ref: &TableReference, node: Arc<dyn TableProvider>, buf: &mut Vec<u8>) -> Result<()> {
        let Some(provider) = node.downcast_ref::<ClipTtaProvider>() else {
            return self.inner.try_encode_table_provider(table_ref, node, buf);
        };
        let location = match provider.source() {
            ProviderSource::Lake(location) => location,
            ProviderSource::Table { name, .. } => {
                return plan_err!("cliptta_table('{name}', ...) cannot run on a cluster yet: use cliptta('<location>', ...) over an object store");
            }
        };
        check_shippable(location)?;
        let (options, state) = options_to_wire(provider.options())?;
        let config = ProviderConfig { location: absolute_location(location.original())?, options };
        Envelope { kind: Kind::Provider, json: json(&config)?, state }.encode(buf);
        Ok(())
    }
}

/// Physical codec: `ClipTtaExec` and `ImageListingExec`, then Ballista's own nodes.
#[derive(Debug)]
pub struct ClipTtaPhysicalCodec {
    inner: Arc<dyn PhysicalExtensionCodec>,
}

impl Default for ClipTtaPhysicalCodec {
    fn default() -> Self {
        Self { inner: Arc::new(BallistaPhysicalExtensionCodec::default()) }
    }
}

impl ClipTtaPhysicalCodec {
    fn encode_exec(exec: &ClipTtaExec) -> Result<Envelope> {
        let (options, state) = options_to_wire(exec.options())?;
        let source = match exec.source() {
            ImageSource::Bytes { column } => SourceConfig::Bytes { column: *column },
            ImageSource::Location { column, size_column, store_url, .. } => {
                let location = ImageLocation::parse(store_url)?;
                check_shippable(&location)?;
                SourceConfig::Location { column: *column, size_column: *size_column, store_url: store_url.clone() }
            }
        };
        let config = ExecConfig { options, source, drop_image: exec.drops_image() };
        Ok(Envelope { kind: Kind::Exec, json: json(&config)?, state })
    }

    fn encode_listing(listing: &ImageListingExec) -> Result<Envelope> {
        check_shippable(listing.location())?;
        let config = ListingConfig {
            location: absolute_location(listing.location().original())?,
            shuffle_seed: order_to_wire(listing.order()),
            extensions: listing.location().extensions().clone(),
            partitions: listing.partitions(),
            store_options: listing.store_options().to_vec(),
        };
        Ok(Envelope { kind: Kind::Listing, json: json(&config)?, state: None })
    }

    fn decode_exec(envelope: Envelope, inputs: &[Arc<dyn ExecutionPlan>], ctx: &TaskContext) -> Result<Arc<dyn ExecutionPlan>> {
        let config: ExecConfig = parse(&envelope.json, "ClipTtaExec")?;
        let [input] = inputs else {
            return plan_err!("cliptta: ClipTtaExec needs one input, the plan has {}", inputs.len());
        };
        let options = options_from_wire(config.options, envelope.state)?;
        let source = match config.source {
            SourceConfig::Bytes { column } => ImageSource::Bytes { column },
            SourceConfig::Location { column, size_column, store_url } => {
                let location = ImageLocation::parse(&store_url)?;
                let store = resolve_store(&ctx.runtime_env(), &location, &options.store_options)?;
                ImageSource::Location { column, size_column, store, store_url }
            }
        };
        Ok(Arc::new(ClipTtaExec::try_new(input.clone(), source, options, config.drop_image)?))
    }

    /// The listing's partition ids travel as its input (an in-memory scan Ballista's codec
    /// carries and its scheduler cuts to each task's share, see `sql::listing`).
    fn decode_listing(envelope: Envelope, inputs: &[Arc<dyn ExecutionPlan>], ctx: &TaskContext) -> Result<Arc<dyn ExecutionPlan>> {
        let config: ListingConfig = parse(&envelope.json, "ImageListingExec")?;
        let [ids] = inputs else {
            return plan_err!("cliptta: ImageListingExec needs one input (its partition ids), the plan has {}", inputs.len());
        };
        let location = ImageLocation::parse(&config.location)?.with_extensions(config.extensions);
        let store = resolve_store(&ctx.runtime_env(), &location, &config.store_options)?;
        let listing = ImageListingExec::try_with_ids(location, store, order_from_wire(config.shuffle_seed), config.partitions, ids.clone())?
            .with_store_options(config.store_options);
        Ok(Arc::new(listing))
    }
}

impl PhysicalExtensionCodec for ClipTtaPhysicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if !Envelope::is_ours(buf) {
            return self.inner.try_decode(buf, inputs, ctx, proto_converter);
        }
        let envelope = Envelope::decode(buf)?;
        match envelope.kind {
            Kind::Exec => Self::decode_exec(envelope, inputs, ctx),
            Kind::Listing => Self::decode_listing(envelope, inputs, ctx),
            Kind::Provider => plan_err!("cliptta: a table node where an execution plan was expected"),
        }
    }

    fn try_encode(&self, node: Arc<dyn ExecutionPlan>, buf: &mut Vec<u8>, proto_converter: &dyn PhysicalProtoConverterExtension) -> Result<()> {
        let envelope = if let Some(exec) = node.downcast_ref::<ClipTtaExec>() {
            Self::encode_exec(exec)?
        } else if let Some(listing) = node.downcast_ref::<ImageListingExec>() {
            Self::encode_listing(listing)?
        } else {
            return self.inner.try_encode(node, buf, proto_converter);
        };
        envelope.encode(buf);
        Ok(())
    }
}
