package capacity

import (
	"context"
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
)

// Owner is the owner to give the objects so that they go when the provisioner is uninstalled:
// the topmost controller of pod (in namespace) that lives as long as the installation. That is
// the Deployment of the pod's ReplicaSet, read from the ReplicaSet (the pod's reference names
// only the ReplicaSet); the ReplicaSet if it has no controller; the pod's controller if it is
// not a ReplicaSet (a StatefulSet, say); the pod itself if it has none. Owner is nil for pod "",
// a process that runs outside a pod. The reference is a controller's, without
// BlockOwnerDeletion, which would need the right to set finalizers on the owner.
func Owner(ctx context.Context, client kubernetes.Interface, namespace, pod string) (*metav1.OwnerReference, error) {
	if pod == "" {
		return nil, nil
	}
	p, err := client.CoreV1().Pods(namespace).Get(ctx, pod, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("reading pod %s/%s for the owner of the capacity objects: %w", namespace, pod, err)
	}
	c := metav1.GetControllerOfNoCopy(p)
	if c == nil {
		return reference("v1", "Pod", p.Name, p.UID), nil
	}
	if gv, err := schema.ParseGroupVersion(c.APIVersion); err != nil || gv.Group != "apps" || c.Kind != "ReplicaSet" {
		return reference(c.APIVersion, c.Kind, c.Name, c.UID), nil
	}
	rs, err := client.AppsV1().ReplicaSets(namespace).Get(ctx, c.Name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("reading ReplicaSet %s/%s for the owner of the capacity objects: %w", namespace, c.Name, err)
	}
	if rs.UID != c.UID {
		return nil, fmt.Errorf("ReplicaSet %s/%s is not pod %s's any more (UID %s, not %s)", namespace, c.Name, pod, rs.UID, c.UID)
	}
	if d := metav1.GetControllerOfNoCopy(rs); d != nil {
		return reference(d.APIVersion, d.Kind, d.Name, d.UID), nil
	}
	return reference("apps/v1", "ReplicaSet", rs.Name, rs.UID), nil
}

func reference(apiVersion, kind, name string, uid types.UID) *metav1.OwnerReference {
	return &metav1.OwnerReference{APIVersion: apiVersion, Kind: kind, Name: name, UID: uid, Controller: ptr.To(true)}
}
